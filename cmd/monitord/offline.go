package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/monitor"
)

// Offline subcommands (design.md section 6): disaster recovery on a STOPPED monitor's data dir.
// Each refuses a store a running monitord holds.

const flagDataDir = "data-dir"

const recoveryExamples = `  # A majority is lost for good (b and c are gone); a survives. Stop a, then:
  monitord check --data-dir /var/lib/minimon/a
  monitord extract-monmap --data-dir /var/lib/minimon/a --out monmap.json   # keep a copy
  monitord inject-monmap --data-dir /var/lib/minimon/a --keep a --epoch-jump 100
  monitord --name a --data-dir /var/lib/minimon/a --addr 10.0.0.1:6789     # a quorum of one
  # then grow back with new monitors (new names, fresh data dirs) started with --join.`

func addOfflineCmds(root *cobra.Command, e env) {
	root.AddCommand(newCheckCmd(e), newExtractMonmapCmd(e), newInjectMonmapCmd(e), newCompactCmd(e))
}

func dataDirFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, flagDataDir, "", "data directory of the stopped monitor (required)")
	_ = cmd.MarkFlagRequired(flagDataDir)
}

func newCheckCmd(e env) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify a stopped monitor's store (identity, paxos log, member map, file pages)",
		Long: `check opens the store of a stopped monitor read-only and verifies: the identity (fsid, name,
format version), no interrupted sync, paxos first_committed <= last_committed with every
version in between present and decoding as a transaction, the member map in force holding
this monitor, and bbolt's page-level consistency. Exit status 0 with a one-line summary, 1
with the first problem found.`,
		Example: "  monitord check --data-dir /var/lib/minimon/a",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			info, err := monitor.CheckStore(dataDir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, info)
			return err
		},
	}
	dataDirFlag(cmd, &dataDir)
	return cmd
}

func newExtractMonmapCmd(e env) *cobra.Command {
	var dataDir, out string
	cmd := &cobra.Command{
		Use:   "extract-monmap",
		Short: "Write a stopped monitor's member map as JSON",
		Long: `extract-monmap writes the member map in force in a stopped monitor's store (the latest
committed monmap) as JSON, readable and editable for inject-monmap --in.`,
		Example: "  monitord extract-monmap --data-dir /var/lib/minimon/a --out monmap.json",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			mm, err := monitor.ExtractMonmap(dataDir)
			if err != nil {
				return err
			}
			b, err := monitor.MarshalMonmapJSON(mm)
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = e.stdout.Write(b)
				return err
			}
			return os.WriteFile(out, b, 0o644)
		},
	}
	dataDirFlag(cmd, &dataDir)
	cmd.Flags().StringVar(&out, "out", "", "file to write (default: stdout)")
	return cmd
}

func newInjectMonmapCmd(e env) *cobra.Command {
	var dataDir, in string
	var keep []string
	var jump uint64
	cmd := &cobra.Command{
		Use:   "inject-monmap",
		Short: "Replace a stopped monitor's member map (recovery from a lost quorum)",
		Long: `inject-monmap replaces the member map of a stopped monitor with the given one, written as a
new epoch (current epoch + max(1, --epoch-jump)) straight into the store, not through Paxos:
this is the surgery for a quorum lost for good (Ceph's ceph-mon --inject-monmap). The map
comes from --in (JSON as written by extract-monmap, possibly edited) or from --keep, which
keeps only the named monitors of the current map (ranks reassigned in name order). The map
must hold this monitor, with valid and unique names and addresses.

Inject only into survivors that will form the new cluster, never into a store of a monitor
that is still part of a live quorum: two quorums would then accept writes independently.`,
		Example: recoveryExamples,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if (in == "") == (len(keep) == 0) {
				return errors.New("inject-monmap needs exactly one of --in FILE and --keep NAME[,NAME]")
			}
			mmIn, err := injectSource(dataDir, in, keep)
			if err != nil {
				return err
			}
			mm, err := monitor.InjectMonmap(dataDir, mmIn, monitor.InjectOptions{EpochJump: jump})
			if err != nil {
				return err
			}
			names := make([]string, 0, len(mm.GetMons()))
			for _, mi := range mm.GetMons() {
				names = append(names, mi.GetName()+"="+mi.GetAddr())
			}
			_, err = fmt.Fprintf(e.stdout, "injected monmap epoch %d (%s)\n", mm.GetEpoch(), strings.Join(names, ","))
			return err
		},
	}
	dataDirFlag(cmd, &dataDir)
	fs := cmd.Flags()
	fs.StringVar(&in, "in", "", "JSON member map to inject (as written by extract-monmap)")
	fs.StringSliceVar(&keep, "keep", nil, "build the map from the current one keeping only these monitors")
	fs.Uint64Var(&jump, "epoch-jump", 1, "the new epoch is the current one plus max(1, this)")
	return cmd
}

// injectSource reads --in, or builds the --keep map from the store's current one.
func injectSource(dataDir, in string, keep []string) (*minimonv1.MonMap, error) {
	if in != "" {
		b, err := os.ReadFile(in)
		if err != nil {
			return nil, err
		}
		return monitor.ParseMonmapJSON(b)
	}
	cur, err := monitor.ExtractMonmap(dataDir)
	if err != nil {
		return nil, err
	}
	return monitor.KeepMonmap(cur, keep)
}

func newCompactCmd(e env) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Shrink a stopped monitor's store file (copy, fsync, atomic rename)",
		Long: `compact copies the store of a stopped monitor into a new file in the same directory, fsyncs
it and renames it over the store: bbolt never returns freed pages to the file system itself.
A crash during compact leaves the old store intact.`,
		Example: "  monitord compact --data-dir /var/lib/minimon/a",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			before, after, err := monitor.CompactStore(dataDir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "compacted: %d bytes before, %d bytes after\n", before, after)
			return err
		},
	}
	dataDirFlag(cmd, &dataDir)
	return cmd
}
