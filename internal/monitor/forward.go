package monitor

// Generic write forwarding peon -> leader (ceph-mon-spec.md 6.8, design.md section 2): the peon
// sends the client call's full method name and marshaled request; the leader runs the same
// handler a direct client call would reach and sends back the marshaled reply, or the gRPC
// status of the failure. The Forward RPC itself fails only for transport or fsid reasons, so a
// peon can tell "the leader said no" (ForwardReply.code) from "the leader was not reached".

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// ForwardHandler runs a forwarded client call at the leader: method is the full gRPC method
// name, req the marshaled request; it returns the marshaled reply or an error (a gRPC status
// error keeps its code; any other error travels as codes.Unknown).
type ForwardHandler func(ctx context.Context, method string, req []byte) ([]byte, error)

// ForwardService serves Peer.Forward; its Forward method has the PeerServer signature so the
// daemon's Peer server can delegate to it.
type ForwardService struct {
	fsid    string
	handler ForwardHandler
}

// ForwardServer returns the server side of Peer.Forward for cluster fsid.
func ForwardServer(fsid string, handler ForwardHandler) *ForwardService {
	return &ForwardService{fsid: fsid, handler: handler}
}

// Forward implements Peer.Forward.
func (f *ForwardService) Forward(ctx context.Context, req *minimonv1.ForwardRequest) (*minimonv1.ForwardReply, error) {
	if req.GetFsid() != f.fsid {
		return nil, status.Errorf(codes.PermissionDenied, "monitor: forward from cluster %q, this is %q", req.GetFsid(), f.fsid)
	}
	if req.GetMethod() == "" {
		return nil, status.Error(codes.InvalidArgument, "monitor: forward without a method")
	}
	if f.handler == nil {
		return nil, status.Error(codes.Unimplemented, "monitor: forwarding is not served here")
	}
	out, err := f.handler(ctx, req.GetMethod(), req.GetRequest())
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.OK { // a non-nil error must never read as success
			st = status.New(codes.Unknown, err.Error())
		}
		return &minimonv1.ForwardReply{Code: int32(st.Code()), Message: st.Message()}, nil
	}
	return &minimonv1.ForwardReply{Reply: out}, nil
}

// Forward sends one client call to the leader behind client and decodes its reply into reply.
// A failure at the leader comes back as a gRPC status error with the leader's code and message;
// a failure to reach it is the RPC's own error.
func Forward(ctx context.Context, client minimonv1.PeerClient, fsid, from, method string, req, reply proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return status.Errorf(codes.Internal, "monitor: forward %s: marshal request: %v", method, err)
	}
	rep, err := client.Forward(ctx, &minimonv1.ForwardRequest{Fsid: fsid, FromName: from, Method: method, Request: b})
	if err != nil {
		return err
	}
	if c := codes.Code(rep.GetCode()); c != codes.OK {
		return status.Error(c, rep.GetMessage())
	}
	if err := proto.Unmarshal(rep.GetReply(), reply); err != nil {
		return status.Errorf(codes.Internal, "monitor: forward %s: unmarshal reply: %v", method, err)
	}
	return nil
}
