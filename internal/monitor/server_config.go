package monitor

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// The central config service's client calls (design.md 5, spec 7.3). Writes go through
// Monitor.write like config-key's (forwarded by peons, validated and staged on the leader,
// answered after the commit condition); reads are served locally under rule 4 (readLocal).

// errWriteNotYet from a write's build means "not now": write waits for the next state change
// and builds again, staging nothing meanwhile.
var errWriteNotYet = errors.New("monitor: write cannot be staged yet")

// configStageable (on the loop, leader) reports whether the config service may stage a write:
// its committed state must be everything Paxos committed, or a staged change would take a
// version that a value committed but not yet applied here already took (a value of an earlier
// epoch recovered by collect, say). The service refreshes from the store first: the commit
// completion that would refresh it may still be queued behind this event.
func (m *Monitor) configStageable() (bool, error) {
	px := m.l.node.Paxos()
	if !px.Writeable() || px.State() == "updating-previous" {
		return false, nil
	}
	b, err := m.store.Get(paxos.Bucket, []byte(paxos.KeyLastCommitted))
	if err != nil {
		return false, err
	}
	var lc uint64
	if b != nil {
		if lc, err = kvstore.ParseU64Key(b); err != nil {
			return false, err
		}
	}
	if lc != px.LastCommitted() {
		return false, nil // a commit is being written: the completion wakes us
	}
	return true, m.l.cfg.Refresh(m.store)
}

// configWrite runs a config write; stage (on the loop, leader) validates and stages it. The
// reply's version is the config version after the write (the leader's, also when forwarded).
func (s *clientServer) configWrite(ctx context.Context, method string, req proto.Message, forwarded bool,
	stage func() (services.Update, error)) (*minimonv1.ConfigWriteReply, error) {
	var version uint64
	local := false
	r, err := s.m.write(ctx, method, req, &minimonv1.ConfigWriteReply{}, forwarded, func() (services.Update, error) {
		ok, err := s.m.configStageable()
		if err != nil {
			return services.Update{}, err
		}
		if !ok {
			return services.Update{}, errWriteNotYet
		}
		upd, err := stage()
		version, local = s.m.l.cfg.Version(), err == nil
		return upd, err
	})
	if err != nil {
		return nil, err
	}
	if !local {
		version = r.GetVersion() // forwarded: the leader's reply carries the config version
	}
	return &minimonv1.ConfigWriteReply{Message: r.GetMessage(), Version: version}, nil
}

func (s *clientServer) ConfigSet(ctx context.Context, req *minimonv1.ConfigSetRequest) (*minimonv1.ConfigWriteReply, error) {
	return s.configSet(ctx, req, false)
}

func (s *clientServer) configSet(ctx context.Context, req *minimonv1.ConfigSetRequest, forwarded bool) (*minimonv1.ConfigWriteReply, error) {
	return s.configWrite(ctx, minimonv1.Monitor_ConfigSet_FullMethodName, req, forwarded, func() (services.Update, error) {
		return s.m.l.cfg.Set(req.GetWho(), req.GetName(), req.GetValue())
	})
}

func (s *clientServer) ConfigRm(ctx context.Context, req *minimonv1.ConfigRmRequest) (*minimonv1.ConfigWriteReply, error) {
	return s.configRm(ctx, req, false)
}

func (s *clientServer) configRm(ctx context.Context, req *minimonv1.ConfigRmRequest, forwarded bool) (*minimonv1.ConfigWriteReply, error) {
	return s.configWrite(ctx, minimonv1.Monitor_ConfigRm_FullMethodName, req, forwarded, func() (services.Update, error) {
		return s.m.l.cfg.Rm(req.GetWho(), req.GetName())
	})
}

func (s *clientServer) ConfigReset(ctx context.Context, req *minimonv1.ConfigResetRequest) (*minimonv1.ConfigWriteReply, error) {
	return s.configReset(ctx, req, false)
}

func (s *clientServer) configReset(ctx context.Context, req *minimonv1.ConfigResetRequest, forwarded bool) (*minimonv1.ConfigWriteReply, error) {
	return s.configWrite(ctx, minimonv1.Monitor_ConfigReset_FullMethodName, req, forwarded, func() (services.Update, error) {
		return s.m.l.cfg.Reset(s.m.store, req.GetVersion())
	})
}

// handleForwardConfig runs a config write a peon forwarded (handleForward's config cases).
func (s *clientServer) handleForwardConfig(ctx context.Context, method string, b []byte) (proto.Message, error) {
	var req proto.Message
	var run func() (proto.Message, error)
	switch method {
	case minimonv1.Monitor_ConfigSet_FullMethodName:
		r := &minimonv1.ConfigSetRequest{}
		req, run = r, func() (proto.Message, error) { return s.configSet(ctx, r, true) }
	case minimonv1.Monitor_ConfigRm_FullMethodName:
		r := &minimonv1.ConfigRmRequest{}
		req, run = r, func() (proto.Message, error) { return s.configRm(ctx, r, true) }
	case minimonv1.Monitor_ConfigReset_FullMethodName:
		r := &minimonv1.ConfigResetRequest{}
		req, run = r, func() (proto.Message, error) { return s.configReset(ctx, r, true) }
	default:
		return nil, status.Errorf(codes.Unimplemented, "forwarding %s: not a config write", method)
	}
	if err := proto.Unmarshal(b, req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "forwarded %s: %v", method, err)
	}
	return run()
}

func (s *clientServer) ConfigGet(ctx context.Context, req *minimonv1.ConfigGetRequest) (*minimonv1.ConfigGetReply, error) {
	var r *minimonv1.ConfigGetReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		es, err := s.m.l.cfg.Get(s.m.store, req.GetWho(), req.GetName(), req.GetHost(), req.GetDeviceClass())
		r = &minimonv1.ConfigGetReply{Entries: es}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *clientServer) ConfigDump(ctx context.Context, _ *minimonv1.ConfigDumpRequest) (*minimonv1.ConfigDumpReply, error) {
	var r *minimonv1.ConfigDumpReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		es, err := s.m.l.cfg.Dump(s.m.store)
		r = &minimonv1.ConfigDumpReply{Entries: es}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *clientServer) ConfigLog(ctx context.Context, req *minimonv1.ConfigLogRequest) (*minimonv1.ConfigLogReply, error) {
	var r *minimonv1.ConfigLogReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		chs, err := s.m.l.cfg.Log(s.m.store, int(req.GetN()))
		r = &minimonv1.ConfigLogReply{Changes: chs}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}
