package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

func newStatusCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the cluster summary as seen through the quorum (like `ceph -s`)",
		Example: "  monctl status\n  monctl -f json status | jq .paxos.last_committed",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.Status(ctx)
				if err != nil {
					return err
				}
				return p.Status(r)
			})
		},
	}
}
