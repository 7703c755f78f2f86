// Package client is the public Go client of minimon's client service (minimon.v1.Monitor).
//
// A Client holds a list of monitor endpoints and hunts for one that answers, like Ceph's
// MonClient: it tries the monitors in order, starting at the last one that answered (at first
// a random one), and skips a monitor it cannot connect to within Config.DialTimeout or that
// answers Unavailable (not in a quorum, not ready). After a full round without an answer it
// backs off (exponential, jittered, capped) and starts another round, until the caller's
// context ends. Always pass a context with a deadline: without one a call to a cluster that
// never regains quorum waits forever.
//
// Writes are at most once. Each write carries a WriteID{client_id, seq}: client_id is random
// per Client and seq increments per write. A write is resent, always with the same WriteID,
// only when its outcome is unknown or it definitely failed before being proposed
// (Unavailable, DeadlineExceeded, Aborted, or no connection); the monitors deduplicate by
// WriteID, so a write that committed before the error is answered from its record instead of
// applied twice. A definite answer (InvalidArgument, NotFound, AlreadyExists,
// ResourceExhausted, FailedPrecondition, ...) is final and returned at once. When the context
// ends while a write's outcome is unknown, the error wraps ErrTimeout: the write may or may
// not have been applied.
//
// Errors wrap the sentinels of errors.go (test with errors.Is) and keep their gRPC status.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Config configures a Client.
type Config struct {
	// Endpoints are the monitors' client addresses (host:port), at least one.
	Endpoints []string
	// DialTimeout bounds connecting to one monitor before hunting moves on (default 2s).
	DialTimeout time.Duration
	// Logger receives debug lines about hunting and retries (default: none).
	Logger *zap.Logger
	// BackoffBase and BackoffMax bound the pause between hunting rounds and between retries
	// of one monitor (defaults 50ms and 1s).
	BackoffBase, BackoffMax time.Duration
}

// Client talks to a minimon cluster. It is safe for concurrent use.
type Client struct {
	cfg      Config
	lg       *zap.Logger
	clientID string
	seq      atomic.Uint64

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	next   int // index in cfg.Endpoints where hunting starts: the last monitor that answered
	closed bool
}

// New returns a Client. It does not connect: connections are made on first use.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("client: no endpoints: %w", ErrInvalid)
	}
	for _, ep := range cfg.Endpoints {
		if ep == "" {
			return nil, fmt.Errorf("client: empty endpoint: %w", ErrInvalid)
		}
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 50 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = max(time.Second, cfg.BackoffBase)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("client: random client id: %w", err)
	}
	return &Client{
		cfg:      cfg,
		lg:       lg.Named("client"),
		clientID: hex.EncodeToString(id[:]),
		conns:    make(map[string]*grpc.ClientConn),
		// Spread clients over the monitors, as Ceph's MonClient picks a random one.
		next: mrand.IntN(len(cfg.Endpoints)),
	}, nil
}

// ClientID is the client_id carried in this Client's WriteIDs.
func (c *Client) ClientID() string { return c.clientID }

// Endpoints returns the configured endpoints.
func (c *Client) Endpoints() []string { return append([]string(nil), c.cfg.Endpoints...) }

// Close closes every connection. Calls after Close fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = nil
	return errors.Join(errs...)
}

func (c *Client) nextWriteID() *minimonv1.WriteID {
	return &minimonv1.WriteID{ClientId: c.clientID, Seq: c.seq.Add(1)}
}

func (c *Client) conn(ep string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[ep]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(ep,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			// Short reconnect backoff: a monitor that comes back is used again within a
			// second or two, not after gRPC's default two minutes.
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: c.cfg.DialTimeout,
		}))
	if err != nil {
		return nil, &unreachableError{endpoint: ep, err: err}
	}
	c.conns[ep] = cc
	return cc, nil
}

// ready waits up to DialTimeout for a connection to ep. A connection already known to be
// failing is skipped at once so that hunting moves on without waiting.
func (c *Client) ready(ctx context.Context, ep string) (*grpc.ClientConn, error) {
	cc, err := c.conn(ep)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return cc, nil
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			return nil, &unreachableError{endpoint: ep, err: errors.New("connection failed")}
		case connectivity.Shutdown:
			return nil, ErrClosed
		}
		if !cc.WaitForStateChange(dctx, s) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &unreachableError{endpoint: ep, err: errors.New("connect timed out")}
		}
	}
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffBase << min(attempt, 16)
	if d <= 0 || d > c.cfg.BackoffMax {
		d = c.cfg.BackoffMax
	}
	// Jitter in [d/2, d): clients that lost the same monitor do not come back in lockstep.
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// do runs call against the monitors, hunting and retrying as the package doc says. When only
// is not "", call goes to that endpoint alone (retried there until ctx ends).
func (c *Client) do(ctx context.Context, method, only string, call func(context.Context, minimonv1.MonitorClient) error) error {
	var last error
	for round := 0; ; round++ {
		eps := []string{only}
		start := 0
		if only == "" {
			eps = c.cfg.Endpoints
			c.mu.Lock()
			start = c.next
			c.mu.Unlock()
		}
		for i := range eps {
			if err := ctx.Err(); err != nil {
				return c.ctxDone(ctx, last)
			}
			idx := (start + i) % len(eps)
			ep := eps[idx]
			cc, err := c.ready(ctx, ep)
			if err != nil {
				if errors.Is(err, ErrClosed) {
					return err
				}
				if ctx.Err() != nil {
					return c.ctxDone(ctx, last)
				}
				last = err
				c.lg.Debug("monitor unreachable", zap.String("method", method), zap.String("endpoint", ep), zap.Error(err))
				continue
			}
			err = call(ctx, minimonv1.NewMonitorClient(cc))
			if err == nil {
				if only == "" {
					c.mu.Lock()
					c.next = idx
					c.mu.Unlock()
				}
				return nil
			}
			if ctx.Err() != nil {
				// The call may have been cut by our own deadline: outcome unknown. A cut call
				// got no answer, so the last answer we did get (say, no quorum) says more.
				if code := status.Code(err); last != nil && (code == codes.DeadlineExceeded || code == codes.Canceled) {
					return c.ctxDone(ctx, last)
				}
				return c.ctxDone(ctx, err)
			}
			st, ok := status.FromError(err)
			if !ok {
				return err
			}
			ce := &Error{Code: st.Code(), Message: st.Message(), Endpoint: ep}
			if !retryable(st.Code()) {
				return ce
			}
			last = ce
			c.lg.Debug("monitor answered retryable error", zap.String("method", method), zap.String("endpoint", ep), zap.Error(err))
		}
		if err := sleep(ctx, c.backoff(round)); err != nil {
			return c.ctxDone(ctx, last)
		}
	}
}

func (c *Client) ctxDone(ctx context.Context, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	if last != nil {
		if st, ok := status.FromError(last); ok && !isClientErr(last) {
			last = &Error{Code: st.Code(), Message: st.Message()}
		}
	}
	return &timeoutError{last: last}
}

func isClientErr(err error) bool {
	var ce *Error
	var ue *unreachableError
	return errors.As(err, &ce) || errors.As(err, &ue)
}

// Status returns the cluster summary as seen through the quorum (like `ceph -s`).
func (c *Client) Status(ctx context.Context) (*minimonv1.StatusReply, error) {
	var r *minimonv1.StatusReply
	err := c.do(ctx, "Status", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.Status(ctx, &minimonv1.StatusRequest{})
		return err
	})
	return r, err
}

// Health returns the cluster health; detail asks for the detail lines of each check.
func (c *Client) Health(ctx context.Context, detail bool) (*minimonv1.HealthReply, error) {
	var r *minimonv1.HealthReply
	err := c.do(ctx, "Health", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.Health(ctx, &minimonv1.HealthRequest{Detail: detail})
		return err
	})
	return r, err
}

// QuorumStatus returns the quorum and the monmap.
func (c *Client) QuorumStatus(ctx context.Context) (*minimonv1.QuorumStatusReply, error) {
	var r *minimonv1.QuorumStatusReply
	err := c.do(ctx, "QuorumStatus", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.QuorumStatus(ctx, &minimonv1.QuorumStatusRequest{})
		return err
	})
	return r, err
}

// MonStatus asks one monitor about itself; it answers even outside a quorum. The request goes
// to endpoint only (which need not be one of Config.Endpoints), retried there until ctx ends;
// endpoint "" asks for hunting: the first monitor of Config.Endpoints that answers.
func (c *Client) MonStatus(ctx context.Context, endpoint string) (*minimonv1.MonStatusReply, error) {
	var r *minimonv1.MonStatusReply
	err := c.do(ctx, "MonStatus", endpoint, func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.MonStatus(ctx, &minimonv1.MonStatusRequest{})
		return err
	})
	return r, err
}

// MonStat returns the monmap with the election epoch, leader and quorum.
func (c *Client) MonStat(ctx context.Context) (*minimonv1.MonStatReply, error) {
	var r *minimonv1.MonStatReply
	err := c.do(ctx, "MonStat", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.MonStat(ctx, &minimonv1.MonStatRequest{})
		return err
	})
	return r, err
}

// MonDump returns the monmap of the given epoch (0: the latest).
func (c *Client) MonDump(ctx context.Context, epoch uint64) (*minimonv1.MonDumpReply, error) {
	var r *minimonv1.MonDumpReply
	err := c.do(ctx, "MonDump", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.MonDump(ctx, &minimonv1.MonDumpRequest{Epoch: epoch})
		return err
	})
	return r, err
}

// MonAdd adds a monitor to the monmap (a write).
func (c *Client) MonAdd(ctx context.Context, name, addr string) (*minimonv1.MonAddReply, error) {
	req := &minimonv1.MonAddRequest{Name: name, Addr: addr, WriteId: c.nextWriteID()}
	var r *minimonv1.MonAddReply
	err := c.do(ctx, "MonAdd", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.MonAdd(ctx, req)
		return err
	})
	return r, err
}

// MonRemove removes a monitor from the monmap (a write; removing an absent one succeeds).
func (c *Client) MonRemove(ctx context.Context, name string) (*minimonv1.MonRemoveReply, error) {
	req := &minimonv1.MonRemoveRequest{Name: name, WriteId: c.nextWriteID()}
	var r *minimonv1.MonRemoveReply
	err := c.do(ctx, "MonRemove", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.MonRemove(ctx, req)
		return err
	})
	return r, err
}

// ConfigSet sets option name to value in section who (with optional masks, "osd/host:a").
func (c *Client) ConfigSet(ctx context.Context, who, name, value string) (*minimonv1.ConfigWriteReply, error) {
	req := &minimonv1.ConfigSetRequest{Who: who, Name: name, Value: value, WriteId: c.nextWriteID()}
	return c.configWrite(ctx, "ConfigSet", func(ctx context.Context, m minimonv1.MonitorClient) (*minimonv1.ConfigWriteReply, error) {
		return m.ConfigSet(ctx, req)
	})
}

// ConfigRm removes option name from section who (removing an absent entry succeeds).
func (c *Client) ConfigRm(ctx context.Context, who, name string) (*minimonv1.ConfigWriteReply, error) {
	req := &minimonv1.ConfigRmRequest{Who: who, Name: name, WriteId: c.nextWriteID()}
	return c.configWrite(ctx, "ConfigRm", func(ctx context.Context, m minimonv1.MonitorClient) (*minimonv1.ConfigWriteReply, error) {
		return m.ConfigRm(ctx, req)
	})
}

// ConfigReset returns the central config to what it was at version.
func (c *Client) ConfigReset(ctx context.Context, version uint64) (*minimonv1.ConfigWriteReply, error) {
	req := &minimonv1.ConfigResetRequest{Version: version, WriteId: c.nextWriteID()}
	return c.configWrite(ctx, "ConfigReset", func(ctx context.Context, m minimonv1.MonitorClient) (*minimonv1.ConfigWriteReply, error) {
		return m.ConfigReset(ctx, req)
	})
}

func (c *Client) configWrite(ctx context.Context, method string, call func(context.Context, minimonv1.MonitorClient) (*minimonv1.ConfigWriteReply, error)) (*minimonv1.ConfigWriteReply, error) {
	var r *minimonv1.ConfigWriteReply
	err := c.do(ctx, method, "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = call(ctx, m)
		return err
	})
	return r, err
}

// ConfigGet returns the winning entry per option for an entity (req.Name "": all options).
func (c *Client) ConfigGet(ctx context.Context, req *minimonv1.ConfigGetRequest) (*minimonv1.ConfigGetReply, error) {
	var r *minimonv1.ConfigGetReply
	err := c.do(ctx, "ConfigGet", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.ConfigGet(ctx, req)
		return err
	})
	return r, err
}

// ConfigDump returns every entry of the central config.
func (c *Client) ConfigDump(ctx context.Context) (*minimonv1.ConfigDumpReply, error) {
	var r *minimonv1.ConfigDumpReply
	err := c.do(ctx, "ConfigDump", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.ConfigDump(ctx, &minimonv1.ConfigDumpRequest{})
		return err
	})
	return r, err
}

// ConfigLog returns the last n changes of the central config (0: all retained).
func (c *Client) ConfigLog(ctx context.Context, n uint32) (*minimonv1.ConfigLogReply, error) {
	var r *minimonv1.ConfigLogReply
	err := c.do(ctx, "ConfigLog", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.ConfigLog(ctx, &minimonv1.ConfigLogRequest{N: n})
		return err
	})
	return r, err
}

// KVSet stores value under key (config-key set).
func (c *Client) KVSet(ctx context.Context, key string, value []byte) (*minimonv1.KVWriteReply, error) {
	req := &minimonv1.KVSetRequest{Key: key, Value: value, WriteId: c.nextWriteID()}
	var r *minimonv1.KVWriteReply
	err := c.do(ctx, "KVSet", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.KVSet(ctx, req)
		return err
	})
	return r, err
}

// KVRm removes key (removing an absent key succeeds, with version 0).
func (c *Client) KVRm(ctx context.Context, key string) (*minimonv1.KVWriteReply, error) {
	req := &minimonv1.KVRmRequest{Key: key, WriteId: c.nextWriteID()}
	var r *minimonv1.KVWriteReply
	err := c.do(ctx, "KVRm", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.KVRm(ctx, req)
		return err
	})
	return r, err
}

// KVGet returns the value of key; a missing key is ErrNotFound.
func (c *Client) KVGet(ctx context.Context, key string) ([]byte, error) {
	var r *minimonv1.KVGetReply
	err := c.do(ctx, "KVGet", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.KVGet(ctx, &minimonv1.KVGetRequest{Key: key})
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.GetValue(), nil
}

// KVExists reports whether key is set.
func (c *Client) KVExists(ctx context.Context, key string) (bool, error) {
	var r *minimonv1.KVExistsReply
	err := c.do(ctx, "KVExists", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.KVExists(ctx, &minimonv1.KVExistsRequest{Key: key})
		return err
	})
	if err != nil {
		return false, err
	}
	return r.GetExists(), nil
}

// KVList returns the keys starting with prefix in key order (limit 0: the server's maximum).
func (c *Client) KVList(ctx context.Context, prefix string, limit uint32) (*minimonv1.KVListReply, error) {
	var r *minimonv1.KVListReply
	err := c.do(ctx, "KVList", "", func(ctx context.Context, m minimonv1.MonitorClient) (err error) {
		r, err = m.KVList(ctx, &minimonv1.KVListRequest{Prefix: prefix, Limit: limit})
		return err
	})
	return r, err
}
