package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/minimon/minimon/client"
)

// backupReport is the -f json output of backup.
type backupReport struct {
	File          string `json:"file"`
	Bytes         int64  `json:"bytes"`
	LastCommitted uint64 `json:"last_committed"`
	Mon           string `json:"mon"`
}

func newBackupCmd(o *globalOpts) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Copy one monitor's store, consistently, while it runs",
		Long: `backup asks the first monitor of --mon-host that answers (pass one address with -m to pick
the monitor) for a consistent copy of its store file, taken while it keeps serving, and writes
it to FILE. The copy holds every version up to the one printed. It is written to FILE.tmp,
synced, then renamed, so FILE is never a partial copy. No quorum is needed. The copy is a
store file: put it in an empty data dir as store.db to inspect it (monitord check) or to
rebuild a monitor from it. --timeout bounds the whole transfer.`,
		Example: "  monctl backup --out mon-a.db\n  monctl -m 10.0.0.2:6789 -f json backup --out /backups/mon-b.db",
		Args:    checkArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("backup: --out FILE is required")
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client, _ printer) error {
				ep := ""
				if eps := c.Endpoints(); len(eps) == 1 {
					ep = eps[0] // one monitor named: copy that one
				}
				info, err := backupToFile(ctx, c, ep, out)
				if err != nil {
					return err
				}
				return printBackup(o.stdout, o.format, backupReport{File: out, Bytes: info.Bytes,
					LastCommitted: info.LastCommitted, Mon: info.Name})
			})
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "file to write the copy to (replaced only once the copy is complete)")
	return cmd
}

// backupToFile writes the copy to path.tmp, fsyncs it and renames it over path, then fsyncs
// the directory, so a crash or a broken stream never leaves a partial file named path.
func backupToFile(ctx context.Context, c *client.Client, ep, path string) (_ client.BackupInfo, err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return client.BackupInfo{}, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	info, err := c.Backup(ctx, ep, f)
	if status.Code(err) == codes.ResourceExhausted {
		// Not a value too large: the monitor is busy with another backup.
		return info, errors.New(status.Convert(err).Message() + " on that monitor; try again later or another monitor")
	}
	if err != nil {
		return info, err
	}
	if err = f.Sync(); err != nil {
		return info, err
	}
	if err = f.Close(); err != nil {
		return info, err
	}
	if err = os.Rename(tmp, path); err != nil {
		return info, err
	}
	d, derr := os.Open(filepath.Dir(path))
	if derr == nil {
		derr = d.Sync()
		_ = d.Close()
	}
	if derr != nil {
		return info, fmt.Errorf("backup: sync the directory of %s: %w", path, derr)
	}
	return info, nil
}

// writeJSONReport prints a report struct of our own (not a proto reply) as one JSON line, or
// indented for json-pretty.
func writeJSONReport(w io.Writer, format string, r any) error {
	var raw []byte
	var err error
	if format == "json-pretty" {
		raw, err = json.MarshalIndent(r, "", "  ")
	} else {
		raw, err = json.Marshal(r)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(append(raw, '\n'))
	return err
}

func printBackup(w io.Writer, format string, r backupReport) error {
	if format != "plain" {
		return writeJSONReport(w, format, r)
	}
	_, err := fmt.Fprintf(w, "backup of mon.%s at version %d: %d bytes -> %s\n", r.Mon, r.LastCommitted, r.Bytes, r.File)
	return err
}
