package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
)

func newWatchCmd(o *globalOpts) *cobra.Command {
	cmd := newGroupCmd("watch", "Print changes as they commit, until interrupted",
		"  monctl watch monmap\n  monctl watch config osd.3\n  monctl -f json watch config-key mgr/")
	cmd.Long = `watch prints the current state first, then one line per change (one JSON object per line
with -f json) until interrupted. If the monitor goes away, it reattaches to another one and
resumes after the last version printed, so no change is printed twice or skipped. --timeout
bounds only the wait for the first event (the current state).`
	cmd.AddCommand(
		newWatchTargetCmd(o, "monmap", "Watch the monitor map", "  monctl watch monmap", 0,
			func([]string) *minimonv1.WatchRequest { return &minimonv1.WatchRequest{Target: "monmap"} }),
		newWatchTargetCmd(o, "config WHO", "Watch the effective options of an entity", "  monctl watch config osd.3", 1,
			func(a []string) *minimonv1.WatchRequest { return &minimonv1.WatchRequest{Target: "config", Who: a[0]} }),
		newWatchTargetCmd(o, "config-key PREFIX", "Watch the config-key entries starting with PREFIX", "  monctl watch config-key mgr/", 1,
			func(a []string) *minimonv1.WatchRequest { return &minimonv1.WatchRequest{Target: "kv", Prefix: a[0]} }),
	)
	return cmd
}

var errAttachTimeout = errors.New("attach timed out")

func newWatchTargetCmd(o *globalOpts, use, short, example string, nargs int, req func([]string) *minimonv1.WatchRequest) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    checkArgs(cobra.ExactArgs(nargs)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.watch(cmd.Context(), req(args))
		},
	}
}

func (o *globalOpts) watch(parent context.Context, req *minimonv1.WatchRequest) error {
	c, err := o.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	attach := time.AfterFunc(o.timeout, func() { cancel(errAttachTimeout) })
	defer attach.Stop()
	p := o.printer()
	for ev, err := range c.Watch(ctx, req) {
		if err != nil {
			switch {
			case errors.Is(context.Cause(ctx), errAttachTimeout):
				return fmt.Errorf("no monitor in a quorum answered the watch within %v: %w", o.timeout, client.ErrTimeout)
			case parent.Err() != nil:
				return nil // interrupted: the normal end of a watch
			}
			return err
		}
		attach.Stop()
		if err := p.WatchEvent(req.Target, ev); err != nil {
			return err
		}
	}
	return nil
}
