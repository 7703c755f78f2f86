package monitor

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

const kvSetMethod = "/minimon.v1.Monitor/KVSet"

// kvSetHandler plays the leader's KVSet handler behind Forward.
func kvSetHandler(_ context.Context, method string, b []byte) ([]byte, error) {
	if method != kvSetMethod {
		return nil, status.Errorf(codes.Unimplemented, "no handler for %s", method)
	}
	var req minimonv1.KVSetRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad request: %v", err)
	}
	switch req.GetKey() {
	case "":
		return nil, status.Error(codes.InvalidArgument, "kv: empty key")
	case "plain-error":
		return nil, errors.New("disk on fire")
	}
	return proto.Marshal(&minimonv1.KVWriteReply{Message: "set " + req.GetKey() + "=" + string(req.GetValue()), Version: 42})
}

func TestForwardRoundTrip(t *testing.T) {
	p := &testPeer{fwd: ForwardServer(testFSID, kvSetHandler)}
	client := startTestPeer(t, p)
	ctx := context.Background()

	var reply minimonv1.KVWriteReply
	if err := Forward(ctx, client, testFSID, "b", kvSetMethod, &minimonv1.KVSetRequest{Key: "k", Value: []byte("v")}, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.GetMessage() != "set k=v" || reply.GetVersion() != 42 {
		t.Fatalf("reply %v", &reply)
	}

	for _, tc := range []struct {
		name, fsid, method, key string
		code                    codes.Code
		msg                     string
	}{
		{"invalid-argument", testFSID, kvSetMethod, "", codes.InvalidArgument, "kv: empty key"},
		{"plain-error-is-unknown", testFSID, kvSetMethod, "plain-error", codes.Unknown, "disk on fire"},
		{"unknown-method", testFSID, "/minimon.v1.Monitor/Nope", "k", codes.Unimplemented, "no handler for /minimon.v1.Monitor/Nope"},
		{"wrong-fsid", "other", kvSetMethod, "k", codes.PermissionDenied, ""},
		{"no-method", testFSID, "", "k", codes.InvalidArgument, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reply minimonv1.KVWriteReply
			err := Forward(ctx, client, tc.fsid, "b", tc.method, &minimonv1.KVSetRequest{Key: tc.key}, &reply)
			st := status.Convert(err)
			if st.Code() != tc.code || (tc.msg != "" && st.Message() != tc.msg) {
				t.Fatalf("Forward: %v, want %v %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestForwardUndecodableReply(t *testing.T) {
	garbage := func(context.Context, string, []byte) ([]byte, error) { return []byte{0xff, 0xff, 0xff}, nil }
	client := startTestPeer(t, &testPeer{fwd: ForwardServer(testFSID, garbage)})
	var reply minimonv1.KVWriteReply
	err := Forward(context.Background(), client, testFSID, "b", kvSetMethod, &minimonv1.KVSetRequest{Key: "k"}, &reply)
	if status.Code(err) != codes.Internal {
		t.Fatalf("Forward: %v, want Internal", err)
	}
}
