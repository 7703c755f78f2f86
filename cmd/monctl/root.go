package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

const defaultMonHost = "127.0.0.1:6789"

// globalOpts holds the persistent flags of design.md section 5 and the process environment.
type globalOpts struct {
	env
	monHost string
	format  string
	timeout time.Duration
}

// usageError is a bad command line: exit 22 (EINVAL), like the ceph CLI.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return client.ErrInvalid }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// checkArgs turns cobra's argument errors into usage errors.
func checkArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &usageError{err.Error()}
		}
		return nil
	}
}

// groupRunE answers a command group (root, mon, config, ...) called without a known
// subcommand: an error, not cobra's silent help.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usagef("%s needs a subcommand (see %s --help)", cmd.CommandPath(), cmd.CommandPath())
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &usageError{msg}
}

func newGroupCmd(use, short, example string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE,
	}
}

func newRootCmd(o *globalOpts) *cobra.Command {
	root := newGroupCmd("monctl", "Command-line client of a minimon cluster",
		"  monctl status\n  monctl -m 10.0.0.1:6789,10.0.0.2:6789 config get osd.3 debug_ms\n  monctl -f json quorum-status")
	root.Long = `monctl talks to the monitors of a minimon cluster. It tries the monitors of --mon-host in
turn until one in a quorum answers, within --timeout.

Exit status: 0 ok; 2 not found; 22 invalid argument; 17 already exists; 27 value too
large; 110 no monitor reachable or no quorum within --timeout; 1 anything else.`
	root.SilenceUsage = true
	root.SilenceErrors = true // main prints "monctl: <reason>" and picks the exit code
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetIn(o.stdin)
	root.SetOut(o.stdout)
	root.SetErr(o.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })

	def := defaultMonHost
	if o.getenv != nil {
		if v := o.getenv("MONCTL_MON_HOST"); v != "" {
			def = v
		}
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&o.monHost, "mon-host", "m", def, "comma-separated monitor addresses (env MONCTL_MON_HOST)")
	pf.StringVarP(&o.format, "format", "f", "plain", "output format: plain, json or json-pretty")
	pf.DurationVar(&o.timeout, "timeout", 10*time.Second, "bound on the whole command, finding a monitor in a quorum included")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		switch o.format {
		case "plain", "json", "json-pretty":
		default:
			return usagef("invalid --format %q: want plain, json or json-pretty", o.format)
		}
		if o.timeout <= 0 {
			return usagef("invalid --timeout %v: must be positive", o.timeout)
		}
		if len(o.endpoints()) == 0 {
			return usagef("--mon-host is empty")
		}
		return nil
	}

	root.AddCommand(
		newStatusCmd(o),
		newHealthCmd(o),
		newQuorumStatusCmd(o),
		newMonStatusCmd(o),
		newMonCmd(o),
		newConfigCmd(o),
		newConfigKeyCmd(o),
		newWatchCmd(o),
		newBenchCmd(o),
		newBackupCmd(o),
		newCompletionCmd(o),
	)
	return root
}

func (o *globalOpts) endpoints() []string {
	var eps []string
	for _, ep := range strings.Split(o.monHost, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	return eps
}

func (o *globalOpts) newClient() (*client.Client, error) {
	return client.New(client.Config{Endpoints: o.endpoints(), DialTimeout: min(2*time.Second, o.timeout)})
}

func (o *globalOpts) printer() printer {
	if o.format == "plain" {
		return &plainPrinter{w: o.stdout, terminal: o.isTerminal}
	}
	return &jsonPrinter{w: o.stdout, pretty: o.format == "json-pretty"}
}

// call runs fn with a client and a context bounded by --timeout (hunting included).
func (o *globalOpts) call(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client, p printer) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	c, err := o.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c, o.printer())
}
