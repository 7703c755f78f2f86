package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/internal/monitor"
)

const flagLogFormat = "log-format"

// daemonOpts are the root command's settings: the monitor's Config plus the daemon's own.
type daemonOpts struct {
	env
	cfg       monitor.Config
	logFormat string
}

const longHelp = `monitord runs one monitor of a minimon cluster, a Go clone of the Ceph monitor. Three or
five monitors elect a leader, keep one replicated history with Paxos and serve clients (monctl)
on the same address they use for their peers.

The first start of a monitor needs --initial-members, the same list on every founding member:
it creates the store in --data-dir and the cluster id (fsid, derived from the list unless
--fsid is given). Later starts read the member map from the store and ignore the list.

Every flag also reads an environment variable: MINIMON_ and the flag name in upper case with
underscores (--mon-lease is MINIMON_MON_LEASE); the command line wins. Protocol timings are
named after Ceph's options and take Go durations (500ms, 2s).

With --metrics-addr, a separate HTTP listener serves /metrics (Prometheus), /healthz (200
while the process serves) and /readyz (200 while this monitor is in a quorum, else 503).

monitord stops cleanly on SIGINT and SIGTERM. Exit status: 0 after a clean stop or when this
monitor was removed from the member map; 1 on a configuration or runtime error, with one line
"monitord: <reason>" on stderr.`

const examples = `  # A three-monitor cluster, one command per host (the same --initial-members everywhere):
  monitord --name a --data-dir /var/lib/minimon/a --addr 10.0.0.1:6789 \
           --initial-members a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789
  monitord --name b --data-dir /var/lib/minimon/b --addr 10.0.0.2:6789 \
           --initial-members a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789
  monitord --name c --data-dir /var/lib/minimon/c --addr 10.0.0.3:6789 \
           --initial-members a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789

  # Later starts need no member list; expose metrics and health checks:
  monitord --name a --data-dir /var/lib/minimon/a --addr 10.0.0.1:6789 --metrics-addr :9283

  # The same through the environment:
  MINIMON_NAME=a MINIMON_DATA_DIR=/var/lib/minimon/a MINIMON_ADDR=10.0.0.1:6789 monitord

  # Three monitors on this host (what "make demo" runs):
  make demo`

func newRootCmd(e env) *cobra.Command {
	o := &daemonOpts{env: e, cfg: monitor.DefaultConfig(), logFormat: "json"}
	cmd := &cobra.Command{
		Use:     "monitord",
		Short:   "Run one monitor of a minimon cluster",
		Long:    longHelp,
		Example: examples,
		Args:    cobra.NoArgs,
		// main prints "monitord: <reason>"; a usage dump would bury it.
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.configure(cmd); err != nil {
				return err
			}
			return o.serve(cmd.Context(), monitor.UnknownEnv(cmd.Flags(), o.environ))
		},
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetOut(e.stdout)
	cmd.SetErr(e.stderr)
	fs := cmd.Flags()
	fs.SortFlags = false
	o.cfg.AddFlags(fs)
	fs.StringVar(&o.logFormat, flagLogFormat, o.logFormat, "log encoding: json or console")
	cmd.AddCommand(newVersionCmd(e))
	addOfflineCmds(cmd, e)
	return cmd
}

func newVersionCmd(e env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of monitord",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(e.stdout, "monitord %s\n", version)
			return err
		},
	}
}

// configure fills o.cfg from the environment and validates everything, before anything touches
// the data dir (go-style.md 12).
func (o *daemonOpts) configure(cmd *cobra.Command) error {
	fs := cmd.Flags()
	if err := monitor.ApplyEnv(fs, o.lookupEnv); err != nil {
		return err
	}
	var errs []error
	if err := o.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		errs = append(errs, fmt.Errorf("--%s=%q: want json or console", flagLogFormat, o.logFormat))
	}
	if len(errs) == 0 {
		return nil
	}
	// A misspelt variable is the likely cause of a missing setting: say so in the same line.
	if unknown := monitor.UnknownEnv(fs, o.environ); len(unknown) > 0 {
		errs = append(errs, fmt.Errorf("unknown environment variables ignored: %s", strings.Join(unknown, ", ")))
	}
	return errors.Join(errs...)
}
