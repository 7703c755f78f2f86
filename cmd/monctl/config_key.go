package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

// maxInputFile bounds what `config-key set -i` reads; the monitors' own limit
// (mon_config_key_max_entry_size, 64 KiB by default) is far lower and is theirs to enforce.
const maxInputFile = 16 << 20

func newConfigKeyCmd(o *globalOpts) *cobra.Command {
	cmd := newGroupCmd("config-key", "The config-key store: arbitrary values under string keys",
		"  monctl config-key set mgr/dashboard/url http://x\n  monctl config-key get mgr/dashboard/url\n  monctl config-key ls mgr/")
	cmd.AddCommand(newConfigKeySetCmd(o), newConfigKeyGetCmd(o), newConfigKeyRmCmd(o),
		newConfigKeyExistsCmd(o), newConfigKeyLsCmd(o))
	return cmd
}

type configKeySetOpts struct{ inFile string }

func newConfigKeySetCmd(o *globalOpts) *cobra.Command {
	var ko configKeySetOpts
	cmd := &cobra.Command{
		Use:     "set KEY [VALUE | -i FILE]",
		Short:   "Store VALUE (or the bytes of FILE, - for stdin) under KEY",
		Example: "  monctl config-key set foo bar\n  monctl config-key set cert -i cert.pem\n  echo hi | monctl config-key set greeting -i -",
		Args:    checkArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			switch {
			case ko.inFile != "" && len(args) == 2:
				return usagef("give VALUE or -i FILE, not both")
			case ko.inFile != "":
				v, err := o.readInput(ko.inFile)
				if err != nil {
					return err
				}
				value = v
			case len(args) == 2:
				value = []byte(args[1])
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.KVSet(ctx, args[0], value)
				if err != nil {
					return err
				}
				return p.Write(r, confirm(r.GetMessage(), "set "+args[0]))
			})
		},
	}
	cmd.Flags().StringVarP(&ko.inFile, "in-file", "i", "", "read the value from FILE (- for stdin)")
	return cmd
}

func (o *globalOpts) readInput(name string) ([]byte, error) {
	var r io.Reader = o.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	v, err := io.ReadAll(io.LimitReader(r, maxInputFile+1))
	if err != nil {
		return nil, err
	}
	if len(v) > maxInputFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", name, maxInputFile, client.ErrTooBig)
	}
	return v, nil
}

func newConfigKeyGetCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "get KEY",
		Short:   "Print the value of KEY, raw (a newline is added only on a terminal); missing exits 2",
		Example: "  monctl config-key get foo\n  monctl config-key get cert > cert.pem",
		Args:    checkArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				v, err := c.KVGet(ctx, args[0])
				if err != nil {
					return err
				}
				return p.KVGet(v)
			})
		},
	}
}

func newConfigKeyRmCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "rm KEY",
		Short:   "Remove KEY (an absent key is not an error)",
		Example: "  monctl config-key rm foo",
		Args:    checkArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.KVRm(ctx, args[0])
				if err != nil {
					return err
				}
				def := "key deleted"
				if r.GetVersion() == 0 {
					def = fmt.Sprintf("no such key '%s'", args[0])
				}
				return p.Write(r, confirm(r.GetMessage(), def))
			})
		},
	}
}

func newConfigKeyExistsCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "exists KEY",
		Short:   "Say whether KEY exists (exit 0) or not (exit 2)",
		Example: "  monctl config-key exists foo && echo present",
		Args:    checkArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				ok, err := c.KVExists(ctx, args[0])
				if err != nil {
					return err
				}
				if err := p.KVExists(args[0], ok); err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("key '%s' doesn't exist: %w", args[0], client.ErrNotFound)
				}
				return nil
			})
		},
	}
}

func newConfigKeyLsCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [PREFIX]",
		Short:   "List the keys (starting with PREFIX) in key order, one per line",
		Example: "  monctl config-key ls\n  monctl -f json config-key ls mgr/",
		Args:    checkArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, p printer) error {
				r, err := c.KVList(ctx, prefix, 0)
				if err != nil {
					return err
				}
				if err := p.KVList(r); err != nil {
					return err
				}
				if r.GetTruncated() {
					fmt.Fprintf(o.stderr, "monctl: more keys match than the monitor returns in one listing; narrow the prefix\n")
				}
				return nil
			})
		},
	}
}
