package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

func newQuorumStatusCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "quorum-status",
		Short:   "Show the quorum: election epoch, members, leader, age and the monmap",
		Example: "  monctl quorum-status\n  monctl -f json-pretty quorum-status",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.QuorumStatus(ctx)
				if err != nil {
					return err
				}
				return p.QuorumStatus(r)
			})
		},
	}
}
