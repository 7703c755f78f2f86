package client

import (
	"context"
	"errors"
	"io"
	"iter"

	"go.uber.org/zap"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Watch streams changes of req.Target ("monmap", "config" with req.Who, "kv" with
// req.Prefix), starting after req.FromVersion (0: the current state first, as a snapshot
// event). Range over the result:
//
//	for ev, err := range c.Watch(ctx, req) {
//		if err != nil { ... } // the last value: the watch has ended
//	}
//
// When a stream breaks (the monitor went away, lost quorum, or ended the stream), Watch
// reattaches to another monitor, hunting as the unary calls do, with from_version = the last
// version it delivered, and drops any event whose version is not above that one: the caller
// sees every version once, in order, with no gaps the server can fill. A snapshot event after
// a reattach (the server could not resume from that version) is passed on with Snapshot set.
// The sequence ends with (nil, err) on a final error (err wraps a sentinel) or when ctx ends
// (err is ctx.Err()); it ends silently when the caller stops ranging.
func (c *Client) Watch(ctx context.Context, req *minimonv1.WatchRequest) iter.Seq2[*minimonv1.WatchEvent, error] {
	return func(yield func(*minimonv1.WatchEvent, error) bool) {
		last := req.GetFromVersion()
		seen := last > 0 // before the first event of a fresh watch, any version is new
		failures := 0
		c.mu.Lock()
		idx := c.next
		c.mu.Unlock()
		for {
			if ctx.Err() != nil {
				yield(nil, ctx.Err())
				return
			}
			ep := c.cfg.Endpoints[idx%len(c.cfg.Endpoints)]
			idx++
			r := &minimonv1.WatchRequest{Target: req.GetTarget(), Who: req.GetWho(), Prefix: req.GetPrefix(), FromVersion: last}
			delivered, stop, err := c.watchOnce(ctx, ep, r, func(ev *minimonv1.WatchEvent) bool {
				if seen && ev.GetVersion() <= last {
					return true // already delivered before the reattach
				}
				seen, last = true, ev.GetVersion()
				return yield(ev, nil)
			})
			if stop {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if delivered {
				failures = 0
				continue // the stream worked: reattach at once
			}
			failures++
			if failures%len(c.cfg.Endpoints) == 0 {
				if sleep(ctx, c.backoff(failures/len(c.cfg.Endpoints)-1)) != nil {
					yield(nil, ctx.Err())
					return
				}
			}
		}
	}
}

// watchOnce runs one stream on ep. It returns whether any event arrived, whether the caller
// stopped ranging, and a final error (nil when the watch should reattach).
func (c *Client) watchOnce(ctx context.Context, ep string, req *minimonv1.WatchRequest, deliver func(*minimonv1.WatchEvent) bool) (delivered, stop bool, err error) {
	cc, err := c.ready(ctx, ep)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return false, false, err
		}
		c.lg.Debug("watch: monitor unreachable", zap.String("endpoint", ep), zap.Error(err))
		return false, false, nil
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when the caller stops ranging
	stream, err := minimonv1.NewMonitorClient(cc).Watch(sctx, req)
	for err == nil {
		var ev *minimonv1.WatchEvent
		ev, err = stream.Recv()
		if err != nil {
			break
		}
		delivered = true
		if !deliver(ev) {
			return delivered, true, nil
		}
	}
	if ctx.Err() != nil {
		return delivered, false, nil // the loop reports ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		// A watch has no end: the monitor closed it (shutting down, leaving the quorum).
		c.lg.Debug("watch: stream ended by monitor", zap.String("endpoint", ep))
		return delivered, false, nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return delivered, false, err
	}
	if retryable(st.Code()) {
		c.lg.Debug("watch: stream broke", zap.String("endpoint", ep), zap.Error(err))
		return delivered, false, nil
	}
	return delivered, false, &Error{Code: st.Code(), Message: st.Message(), Endpoint: ep}
}
