package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

func newMonCmd(o *globalOpts) *cobra.Command {
	cmd := newGroupCmd("mon", "Show and change the monitor map",
		"  monctl mon stat\n  monctl mon dump --epoch 2\n  monctl mon add d 10.0.0.4:6789\n  monctl mon remove d")
	cmd.AddCommand(newMonStatCmd(o), newMonDumpCmd(o), newMonAddCmd(o), newMonRemoveCmd(o))
	return cmd
}

func newMonStatCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "stat",
		Short:   "One line: monmap epoch, members, election epoch, leader and quorum",
		Example: "  monctl mon stat",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.MonStat(ctx)
				if err != nil {
					return err
				}
				return p.MonStat(r)
			})
		},
	}
}

type monDumpOpts struct{ epoch uint64 }

func newMonDumpCmd(o *globalOpts) *cobra.Command {
	var mo monDumpOpts
	cmd := &cobra.Command{
		Use:     "dump [--epoch N]",
		Short:   "Print the monitor map (the latest, or the one of --epoch)",
		Example: "  monctl mon dump\n  monctl -f json mon dump --epoch 2",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.MonDump(ctx, mo.epoch)
				if err != nil {
					return err
				}
				return p.MonDump(r.GetMonmap())
			})
		},
	}
	cmd.Flags().Uint64Var(&mo.epoch, "epoch", 0, "monmap epoch to print (0: the latest)")
	return cmd
}

func newMonAddCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "add NAME ADDR",
		Short:   "Add a monitor to the monitor map",
		Example: "  monctl mon add d 10.0.0.4:6789",
		Args:    checkArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.MonAdd(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), fmt.Sprintf("adding mon.%s at %s", args[0], args[1])))
			})
		},
	}
}

func newMonRemoveCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a monitor from the monitor map (an absent one is not an error)",
		Example: "  monctl mon remove d",
		Args:    checkArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.MonRemove(ctx, args[0])
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), "removing mon."+args[0]))
			})
		},
	}
}

// confirm prefers the monitor's own wording (it knows, e.g., that nothing was there to remove).
func confirm(server, fallback string) string {
	if server != "" {
		return server
	}
	return fallback
}
