// Package clienttest is an in-memory fake of the minimon.v1.Monitor service for tests of
// code that uses package client (the client's own tests and monctl's). It keeps config-key,
// central config and monmap state, deduplicates writes by WriteID like a monitor, records
// every call, and lets a test inject errors per call and replace Watch.
package clienttest

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Call is one RPC the fake received.
type Call struct {
	Method  string
	WriteID *minimonv1.WriteID // nil for reads
}

// Server is the fake. Set the exported hooks before Start.
type Server struct {
	minimonv1.UnimplementedMonitorServer

	// Intercept, when set, runs first in every RPC (Watch included); a non-nil error is
	// returned to the client instead of serving the call.
	Intercept func(method string, req proto.Message) error
	// WatchFunc, when set, serves Watch instead of the built-in one.
	WatchFunc func(*minimonv1.WatchRequest, grpc.ServerStreamingServer[minimonv1.WatchEvent]) error
	// BackupData is the store file the built-in Backup streams (nil: a few fixed bytes), in
	// chunks of BackupChunk bytes (0: 1 MiB), as mon.a at the current version.
	BackupData  []byte
	BackupChunk int
	// BackupFunc, when set, serves Backup instead of the built-in one.
	BackupFunc func(*minimonv1.BackupRequest, grpc.ServerStreamingServer[minimonv1.BackupChunk]) error
	// MaxValueSize bounds config-key values (ResourceExhausted above it); default 64 KiB.
	MaxValueSize int

	mu      sync.Mutex
	calls   []Call
	applied int
	version uint64
	kv      map[string][]byte
	config  []*minimonv1.ConfigEntry
	log     []*minimonv1.ConfigChange
	monmap  *minimonv1.MonMap
	events  []*minimonv1.WatchEvent // kv and monmap changes, for the built-in Watch
	changed chan struct{}           // closed and replaced on every write
	done    map[string]proto.Message
}

// New returns a fake of a healthy three-monitor cluster (a, b, c; leader a; election epoch 6).
func New() *Server {
	return &Server{
		MaxValueSize: 64 << 10,
		version:      1,
		kv:           map[string][]byte{},
		monmap: &minimonv1.MonMap{Epoch: 3, Fsid: "7d4b8e0e-0000-4000-8000-000000000001",
			Created: "2026-01-01T00:00:00Z", Modified: "2026-01-02T00:00:00Z",
			Mons: []*minimonv1.MonInfo{
				{Rank: 0, Name: "a", Addr: "127.0.0.1:6789"},
				{Rank: 1, Name: "b", Addr: "127.0.0.1:6790"},
				{Rank: 2, Name: "c", Addr: "127.0.0.1:6791"},
			}},
		changed: make(chan struct{}),
		done:    map[string]proto.Message{},
	}
}

// Start serves the fake on 127.0.0.1 until the test ends and returns its address.
func (s *Server) Start(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := grpc.NewServer()
	minimonv1.RegisterMonitorServer(g, s)
	go func() { _ = g.Serve(lis) }()
	tb.Cleanup(g.Stop)
	return lis.Addr().String()
}

// Calls returns the calls received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Applied counts writes applied (a deduplicated resend is not counted).
func (s *Server) Applied() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// SetKV stores a key directly (test setup).
func (s *Server) SetKV(key string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putKVLocked(key, value, false)
}

func (s *Server) enter(method string, req proto.Message, wid *minimonv1.WriteID) error {
	s.mu.Lock()
	s.calls = append(s.calls, Call{Method: method, WriteID: wid})
	s.mu.Unlock()
	if s.Intercept != nil {
		return s.Intercept(method, req)
	}
	return nil
}

// write runs apply once per WriteID, as a monitor does, and answers a resend from the record.
func write[T proto.Message](s *Server, method string, req proto.Message, wid *minimonv1.WriteID, apply func() (T, error)) (T, error) {
	var zero T
	if err := s.enter(method, req, wid); err != nil {
		return zero, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := ""
	if wid.GetClientId() != "" {
		key = fmt.Sprintf("%s/%d", wid.GetClientId(), wid.GetSeq())
		if r, ok := s.done[key]; ok {
			return r.(T), nil
		}
	}
	r, err := apply()
	if err != nil {
		return zero, err
	}
	s.applied++
	if key != "" {
		s.done[key] = r
	}
	return r, nil
}

func (s *Server) bumpLocked(ev *minimonv1.WatchEvent) uint64 {
	s.version++
	if ev != nil {
		ev.Version = s.version
		s.events = append(s.events, ev)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return s.version
}

func (s *Server) putKVLocked(key string, value []byte, deleted bool) uint64 {
	if deleted {
		delete(s.kv, key)
	} else {
		s.kv[key] = append([]byte(nil), value...)
	}
	return s.bumpLocked(&minimonv1.WatchEvent{Kv: []*minimonv1.KVChange{{Key: key, Value: value, Deleted: deleted}}})
}

func (s *Server) Status(_ context.Context, req *minimonv1.StatusRequest) (*minimonv1.StatusReply, error) {
	if err := s.enter("Status", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &minimonv1.StatusReply{Fsid: s.monmap.Fsid, Health: &minimonv1.HealthReply{Status: "HEALTH_OK"},
		ElectionEpoch: 6, QuorumNames: s.names(), Leader: "a", MonmapEpoch: s.monmap.Epoch,
		Paxos: &minimonv1.PaxosVersions{FirstCommitted: 1, LastCommitted: s.version}}, nil
}

func (s *Server) names() []string {
	var n []string
	for _, m := range s.monmap.Mons {
		n = append(n, m.Name)
	}
	return n
}

func (s *Server) ranks() []int32 {
	var r []int32
	for _, m := range s.monmap.Mons {
		r = append(r, m.Rank)
	}
	return r
}

func (s *Server) Health(_ context.Context, req *minimonv1.HealthRequest) (*minimonv1.HealthReply, error) {
	if err := s.enter("Health", req, nil); err != nil {
		return nil, err
	}
	r := &minimonv1.HealthReply{Status: "HEALTH_WARN", Checks: map[string]*minimonv1.HealthCheck{
		"MON_CLOCK_SKEW": {Severity: "HEALTH_WARN", Summary: "clock skew detected on mon.c"},
	}}
	if req.Detail {
		r.Checks["MON_CLOCK_SKEW"].Detail = []string{"mon.c clock skew 0.3s > max 0.05s"}
	}
	return r, nil
}

func (s *Server) QuorumStatus(_ context.Context, req *minimonv1.QuorumStatusRequest) (*minimonv1.QuorumStatusReply, error) {
	if err := s.enter("QuorumStatus", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &minimonv1.QuorumStatusReply{ElectionEpoch: 6, Quorum: s.ranks(), QuorumNames: s.names(),
		QuorumLeaderName: "a", QuorumAge: 12.5, Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
}

func (s *Server) MonStatus(_ context.Context, req *minimonv1.MonStatusRequest) (*minimonv1.MonStatusReply, error) {
	if err := s.enter("MonStatus", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &minimonv1.MonStatusReply{Name: "a", Rank: 0, State: "leader", ElectionEpoch: 6, Quorum: s.ranks(),
		Paxos: &minimonv1.PaxosVersions{FirstCommitted: 1, LastCommitted: s.version}, Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
}

func (s *Server) MonStat(_ context.Context, req *minimonv1.MonStatRequest) (*minimonv1.MonStatReply, error) {
	if err := s.enter("MonStat", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &minimonv1.MonStatReply{Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap), ElectionEpoch: 6, LeaderRank: 0,
		LeaderName: "a", Quorum: s.ranks(), QuorumNames: s.names()}, nil
}

func (s *Server) MonDump(_ context.Context, req *minimonv1.MonDumpRequest) (*minimonv1.MonDumpReply, error) {
	if err := s.enter("MonDump", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Epoch != 0 && req.Epoch != s.monmap.Epoch {
		return nil, status.Errorf(codes.NotFound, "monmap epoch %d not found", req.Epoch)
	}
	return &minimonv1.MonDumpReply{Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
}

func (s *Server) MonAdd(_ context.Context, req *minimonv1.MonAddRequest) (*minimonv1.MonAddReply, error) {
	return write(s, "MonAdd", req, req.WriteId, func() (*minimonv1.MonAddReply, error) {
		if req.Name == "" || req.Addr == "" {
			return nil, status.Error(codes.InvalidArgument, "mon add needs a name and an address")
		}
		for _, m := range s.monmap.Mons {
			if m.Name == req.Name || m.Addr == req.Addr {
				return nil, status.Errorf(codes.AlreadyExists, "mon.%s already exists", m.Name)
			}
		}
		s.monmap.Epoch++
		s.monmap.Mons = append(s.monmap.Mons, &minimonv1.MonInfo{Rank: int32(len(s.monmap.Mons)), Name: req.Name, Addr: req.Addr})
		s.bumpLocked(&minimonv1.WatchEvent{Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)})
		return &minimonv1.MonAddReply{Message: fmt.Sprintf("adding mon.%s at %s", req.Name, req.Addr), Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
	})
}

func (s *Server) MonRemove(_ context.Context, req *minimonv1.MonRemoveRequest) (*minimonv1.MonRemoveReply, error) {
	return write(s, "MonRemove", req, req.WriteId, func() (*minimonv1.MonRemoveReply, error) {
		for i, m := range s.monmap.Mons {
			if m.Name == req.Name {
				s.monmap.Epoch++
				s.monmap.Mons = append(s.monmap.Mons[:i:i], s.monmap.Mons[i+1:]...)
				for r, m := range s.monmap.Mons {
					m.Rank = int32(r)
				}
				s.bumpLocked(&minimonv1.WatchEvent{Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)})
				return &minimonv1.MonRemoveReply{Message: "removing mon." + req.Name, Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
			}
		}
		return &minimonv1.MonRemoveReply{Message: fmt.Sprintf("mon.%s does not exist or has already been removed", req.Name), Monmap: proto.Clone(s.monmap).(*minimonv1.MonMap)}, nil
	})
}

var optName = regexp.MustCompile(`^[a-z0-9_]+$`)

func splitWho(who string) (section, mask string) {
	section, mask, _ = strings.Cut(who, "/")
	return section, mask
}

func (s *Server) ConfigSet(_ context.Context, req *minimonv1.ConfigSetRequest) (*minimonv1.ConfigWriteReply, error) {
	return write(s, "ConfigSet", req, req.WriteId, func() (*minimonv1.ConfigWriteReply, error) {
		if !optName.MatchString(req.Name) || req.Who == "" {
			return nil, status.Errorf(codes.InvalidArgument, "invalid option name %q", req.Name)
		}
		if len(req.Value) > s.MaxValueSize {
			return nil, status.Errorf(codes.ResourceExhausted, "value of %d bytes exceeds %d", len(req.Value), s.MaxValueSize)
		}
		sec, mask := splitWho(req.Who)
		e := &minimonv1.ConfigEntry{Section: sec, Mask: mask, Name: req.Name, Value: req.Value}
		s.removeEntryLocked(sec, mask, req.Name)
		s.config = append(s.config, e)
		v := s.bumpLocked(nil)
		s.log = append(s.log, &minimonv1.ConfigChange{Version: v, Timestamp: "2026-01-03T00:00:00Z", Set: []*minimonv1.ConfigEntry{e}})
		return &minimonv1.ConfigWriteReply{Version: v}, nil
	})
}

func (s *Server) removeEntryLocked(sec, mask, name string) *minimonv1.ConfigEntry {
	for i, e := range s.config {
		if e.Section == sec && e.Mask == mask && e.Name == name {
			s.config = append(s.config[:i:i], s.config[i+1:]...)
			return e
		}
	}
	return nil
}

func (s *Server) ConfigRm(_ context.Context, req *minimonv1.ConfigRmRequest) (*minimonv1.ConfigWriteReply, error) {
	return write(s, "ConfigRm", req, req.WriteId, func() (*minimonv1.ConfigWriteReply, error) {
		sec, mask := splitWho(req.Who)
		e := s.removeEntryLocked(sec, mask, req.Name)
		if e == nil {
			return &minimonv1.ConfigWriteReply{Message: fmt.Sprintf("no %s set for %s", req.Name, req.Who), Version: s.version}, nil
		}
		v := s.bumpLocked(nil)
		s.log = append(s.log, &minimonv1.ConfigChange{Version: v, Timestamp: "2026-01-03T00:00:00Z", Removed: []*minimonv1.ConfigEntry{e}})
		return &minimonv1.ConfigWriteReply{Version: v}, nil
	})
}

func (s *Server) ConfigReset(_ context.Context, req *minimonv1.ConfigResetRequest) (*minimonv1.ConfigWriteReply, error) {
	return write(s, "ConfigReset", req, req.WriteId, func() (*minimonv1.ConfigWriteReply, error) {
		if req.Version > s.version {
			return nil, status.Errorf(codes.InvalidArgument, "version %d is in the future", req.Version)
		}
		return &minimonv1.ConfigWriteReply{Version: s.bumpLocked(nil)}, nil
	})
}

// effectiveLocked resolves who (unmasked entries only): global < type < type.id.
func (s *Server) effectiveLocked(who string) map[string]*minimonv1.ConfigEntry {
	typ, _, _ := strings.Cut(who, ".")
	out := map[string]*minimonv1.ConfigEntry{}
	for _, sec := range []string{"global", typ, who} {
		for _, e := range s.config {
			if e.Section == sec && e.Mask == "" {
				out[e.Name] = e
			}
		}
	}
	return out
}

func (s *Server) ConfigGet(_ context.Context, req *minimonv1.ConfigGetRequest) (*minimonv1.ConfigGetReply, error) {
	if err := s.enter("ConfigGet", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	eff := s.effectiveLocked(req.Who)
	r := &minimonv1.ConfigGetReply{}
	for _, n := range sortedKeys(eff) {
		if req.Name == "" || req.Name == n {
			r.Entries = append(r.Entries, eff[n])
		}
	}
	return r, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (s *Server) ConfigDump(_ context.Context, req *minimonv1.ConfigDumpRequest) (*minimonv1.ConfigDumpReply, error) {
	if err := s.enter("ConfigDump", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &minimonv1.ConfigDumpReply{Entries: append([]*minimonv1.ConfigEntry(nil), s.config...)}, nil
}

func (s *Server) ConfigLog(_ context.Context, req *minimonv1.ConfigLogRequest) (*minimonv1.ConfigLogReply, error) {
	if err := s.enter("ConfigLog", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.log
	if req.N > 0 && int(req.N) < len(l) {
		l = l[len(l)-int(req.N):]
	}
	return &minimonv1.ConfigLogReply{Changes: append([]*minimonv1.ConfigChange(nil), l...)}, nil
}

func (s *Server) KVSet(_ context.Context, req *minimonv1.KVSetRequest) (*minimonv1.KVWriteReply, error) {
	return write(s, "KVSet", req, req.WriteId, func() (*minimonv1.KVWriteReply, error) {
		if req.Key == "" {
			return nil, status.Error(codes.InvalidArgument, "empty key")
		}
		if len(req.Value) > s.MaxValueSize {
			return nil, status.Errorf(codes.ResourceExhausted, "value of %d bytes exceeds mon_config_key_max_entry_size %d", len(req.Value), s.MaxValueSize)
		}
		return &minimonv1.KVWriteReply{Message: "set " + req.Key, Version: s.putKVLocked(req.Key, req.Value, false)}, nil
	})
}

func (s *Server) KVRm(_ context.Context, req *minimonv1.KVRmRequest) (*minimonv1.KVWriteReply, error) {
	return write(s, "KVRm", req, req.WriteId, func() (*minimonv1.KVWriteReply, error) {
		if _, ok := s.kv[req.Key]; !ok {
			return &minimonv1.KVWriteReply{Message: fmt.Sprintf("no such key '%s'", req.Key)}, nil
		}
		return &minimonv1.KVWriteReply{Message: "key deleted", Version: s.putKVLocked(req.Key, nil, true)}, nil
	})
}

func (s *Server) KVGet(_ context.Context, req *minimonv1.KVGetRequest) (*minimonv1.KVGetReply, error) {
	if err := s.enter("KVGet", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[req.Key]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "error obtaining '%s': no such key", req.Key)
	}
	return &minimonv1.KVGetReply{Value: v}, nil
}

func (s *Server) KVExists(_ context.Context, req *minimonv1.KVExistsRequest) (*minimonv1.KVExistsReply, error) {
	if err := s.enter("KVExists", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.kv[req.Key]
	return &minimonv1.KVExistsReply{Exists: ok}, nil
}

func (s *Server) KVList(_ context.Context, req *minimonv1.KVListRequest) (*minimonv1.KVListReply, error) {
	if err := s.enter("KVList", req, nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &minimonv1.KVListReply{}
	for _, k := range sortedKeys(s.kv) {
		if strings.HasPrefix(k, req.Prefix) {
			if req.Limit > 0 && len(r.Keys) == int(req.Limit) {
				r.Truncated = true
				break
			}
			r.Keys = append(r.Keys, k)
		}
	}
	return r, nil
}

// Watch serves "kv" and "monmap": a snapshot when from_version is 0, then every change.
func (s *Server) Watch(req *minimonv1.WatchRequest, stream grpc.ServerStreamingServer[minimonv1.WatchEvent]) error {
	if err := s.enter("Watch", req, nil); err != nil {
		return err
	}
	if s.WatchFunc != nil {
		return s.WatchFunc(req, stream)
	}
	match := func(ev *minimonv1.WatchEvent) *minimonv1.WatchEvent {
		switch req.Target {
		case "monmap":
			if ev.Monmap != nil {
				return ev
			}
		case "kv":
			out := &minimonv1.WatchEvent{Version: ev.Version}
			for _, c := range ev.Kv {
				if strings.HasPrefix(c.Key, req.Prefix) {
					out.Kv = append(out.Kv, c)
				}
			}
			if len(out.Kv) > 0 {
				return out
			}
		}
		return nil
	}
	s.mu.Lock()
	from := req.FromVersion
	if from == 0 {
		snap := &minimonv1.WatchEvent{Version: s.version, Snapshot: true}
		switch req.Target {
		case "monmap":
			snap.Monmap = proto.Clone(s.monmap).(*minimonv1.MonMap)
		case "kv":
			for _, k := range sortedKeys(s.kv) {
				if strings.HasPrefix(k, req.Prefix) {
					snap.Kv = append(snap.Kv, &minimonv1.KVChange{Key: k, Value: s.kv[k]})
				}
			}
		default:
			s.mu.Unlock()
			return status.Errorf(codes.InvalidArgument, "fake watch: unsupported target %q", req.Target)
		}
		from = s.version
		s.mu.Unlock()
		if err := stream.Send(snap); err != nil {
			return err
		}
		s.mu.Lock()
	}
	for {
		var out []*minimonv1.WatchEvent
		for _, ev := range s.events {
			if ev.Version > from {
				if m := match(ev); m != nil {
					out = append(out, m)
				}
				from = ev.Version
			}
		}
		ch := s.changed
		s.mu.Unlock()
		for _, ev := range out {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-ch:
		}
		s.mu.Lock()
	}
}

// DefaultBackupData is what the built-in Backup streams when BackupData is nil.
var DefaultBackupData = []byte("minimon fake store file\n")

func (s *Server) Backup(req *minimonv1.BackupRequest, stream grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
	if err := s.enter("Backup", req, nil); err != nil {
		return err
	}
	if s.BackupFunc != nil {
		return s.BackupFunc(req, stream)
	}
	data, size := s.BackupData, s.BackupChunk
	if data == nil {
		data = DefaultBackupData
	}
	if size <= 0 {
		size = 1 << 20
	}
	s.mu.Lock()
	lc := s.version
	s.mu.Unlock()
	for off := 0; off == 0 || off < len(data); off += size {
		c := &minimonv1.BackupChunk{Data: data[off:min(off+size, len(data))]}
		if off == 0 {
			c.LastCommitted, c.TotalBytes, c.Name = lc, uint64(len(data)), "a"
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}
