package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

func newHealthCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:       "health [detail]",
		Short:     "Show the cluster health (HEALTH_OK, HEALTH_WARN, HEALTH_ERR) and its checks",
		Example:   "  monctl health\n  monctl health detail",
		ValidArgs: []string{"detail"},
		Args:      checkArgs(cobra.MatchAll(cobra.MaximumNArgs(1), cobra.OnlyValidArgs)),
		RunE: func(cmd *cobra.Command, args []string) error {
			detail := len(args) == 1
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.Health(ctx, detail)
				if err != nil {
					return err
				}
				return p.Health(r, detail)
			})
		},
	}
}
