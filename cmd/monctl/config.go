package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
)

func newConfigCmd(o *globalOpts) *cobra.Command {
	cmd := newGroupCmd("config", "Central configuration: options per section (global, type, type.id)",
		"  monctl config set osd.3 debug_ms 1\n  monctl config get osd.3 debug_ms\n  monctl config dump\n  monctl config log 5")
	cmd.AddCommand(newConfigSetCmd(o), newConfigGetCmd(o), newConfigRmCmd(o), newConfigDumpCmd(o),
		newConfigLogCmd(o), newConfigResetCmd(o))
	return cmd
}

func newConfigSetCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "set WHO OPTION VALUE",
		Short:   "Set an option for WHO (global, a type, type.id, optionally /host:NAME or /class:NAME)",
		Example: "  monctl config set osd.3 debug_ms 1\n  monctl config set osd/class:ssd osd_max_backfills 2",
		Args:    checkArgs(cobra.ExactArgs(3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigSet(ctx, args[0], args[1], args[2])
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), fmt.Sprintf("set %s %s", args[0], args[1])))
			})
		},
	}
}

type configGetOpts struct{ host, class string }

func newConfigGetCmd(o *globalOpts) *cobra.Command {
	var co configGetOpts
	cmd := &cobra.Command{
		Use:   "get WHO [OPTION] [--host H] [--class C]",
		Short: "Show the value of an option for an entity, or every option that applies to it",
		Long: `With OPTION, config get prints the value alone (a newline is added only on a terminal);
an option set nowhere for WHO exits 2. Without OPTION it prints the winning entry of every
option. --host and --class say which host and device class the entity has, so that masked
entries (osd/host:NAME, osd/class:NAME) can be evaluated.`,
		Example: "  monctl config get osd.3 debug_ms\n  monctl config get osd.3 --host node1 --class ssd",
		Args:    checkArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &minimonv1.ConfigGetRequest{Who: args[0], Host: co.host, DeviceClass: co.class}
			if len(args) == 2 {
				req.Name = args[1]
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigGet(ctx, req)
				if err != nil {
					return err
				}
				if req.Name != "" {
					var hit *minimonv1.ConfigEntry
					for _, e := range r.GetEntries() {
						if e.GetName() == req.Name {
							hit = e
						}
					}
					if hit == nil {
						return fmt.Errorf("option %s is not set for %s: %w", req.Name, req.Who, client.ErrNotFound)
					}
					r = &minimonv1.ConfigGetReply{Entries: []*minimonv1.ConfigEntry{hit}}
				}
				return p.ConfigGet(r, req.Name)
			})
		},
	}
	cmd.Flags().StringVar(&co.host, "host", "", "host of the entity, for /host: masks")
	cmd.Flags().StringVar(&co.class, "class", "", "device class of the entity, for /class: masks")
	return cmd
}

func newConfigRmCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "rm WHO OPTION",
		Short:   "Remove an option from WHO's section (an absent one is not an error)",
		Example: "  monctl config rm osd.3 debug_ms",
		Args:    checkArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigRm(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), fmt.Sprintf("removed %s %s", args[0], args[1])))
			})
		},
	}
}

func newConfigDumpCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "dump",
		Short:   "Print every entry of the central configuration",
		Example: "  monctl config dump\n  monctl -f json config dump | jq '.[].name'",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigDump(ctx)
				if err != nil {
					return err
				}
				return p.ConfigDump(r)
			})
		},
	}
}

func parseUint(what, s string, bits int) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, usagef("invalid %s %q: want a non-negative integer", what, s)
	}
	return v, nil
}

func newConfigLogCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "log [N]",
		Short:   "Show the last N changes of the central configuration (all retained without N)",
		Example: "  monctl config log\n  monctl config log 5",
		Args:    checkArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n uint64
			if len(args) == 1 {
				var err error
				if n, err = parseUint("N", args[0], 32); err != nil {
					return err
				}
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigLog(ctx, uint32(n))
				if err != nil {
					return err
				}
				return p.ConfigLog(r)
			})
		},
	}
}

func newConfigResetCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "reset VERSION",
		Short:   "Return the central configuration to what it was at VERSION (see config log)",
		Example: "  monctl config reset 12",
		Args:    checkArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := parseUint("VERSION", args[0], 64)
			if err != nil {
				return err
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.ConfigReset(ctx, v)
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), fmt.Sprintf("reset to version %d", v)))
			})
		},
	}
}
