package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

func newMonStatusCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "mon-status",
		Short: "Show what one monitor says about itself (answered even outside a quorum)",
		Long: `mon-status asks the first monitor of --mon-host that can be reached; it answers even when
it is not in a quorum (probing, synchronizing, electing). Pass one address with -m to ask a
particular monitor.`,
		Example: "  monctl -m 10.0.0.2:6789 mon-status\n  monctl -f json mon-status | jq .state",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				ep := ""
				if eps := c.Endpoints(); len(eps) == 1 {
					ep = eps[0] // one monitor named: ask it and no other
				}
				r, err := c.MonStatus(ctx, ep)
				if err != nil {
					return err
				}
				return p.MonStatus(r)
			})
		},
	}
}
