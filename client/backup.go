package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// BackupInfo describes a backup Backup wrote.
type BackupInfo struct {
	Name          string // the monitor that made the copy
	LastCommitted uint64 // paxos last_committed of the copy: it holds every version up to it
	Bytes         int64  // bytes written to w (the store file's size)
}

// errBackupBroken stops the hunt once bytes went to w: they cannot be taken back, so a second
// attempt would append a second copy.
var errBackupBroken = errors.New("client: backup stream broke")

// Backup writes a consistent copy of ONE monitor's store file (bbolt) to w: the monitor at
// endpoint (retried there until ctx ends), or with endpoint "" the first of Config.Endpoints
// that answers. No quorum is needed. The call is retried (hunting) only until the first byte
// reaches w; a stream that breaks later fails the call, and w then holds a partial copy the
// caller must discard. A monitor already serving a backup answers ResourceExhausted (final).
func (c *Client) Backup(ctx context.Context, endpoint string, w io.Writer) (BackupInfo, error) {
	var info BackupInfo
	var broken error
	err := c.do(ctx, "Backup", endpoint, func(ctx context.Context, m minimonv1.MonitorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // ends the stream if we stop reading early
		s, err := m.Backup(ctx, &minimonv1.BackupRequest{})
		if err != nil {
			return err
		}
		first, err := s.Recv()
		if errors.Is(err, io.EOF) {
			broken = fmt.Errorf("%w: the monitor sent no data", errBackupBroken)
			return broken
		}
		if err != nil {
			return err // nothing written yet: hunting may go on
		}
		info = BackupInfo{Name: first.GetName(), LastCommitted: first.GetLastCommitted()}
		total := first.GetTotalBytes()
		fail := func(format string, args ...any) error {
			broken = fmt.Errorf("backup from mon.%s after %d of %d bytes: "+format,
				append([]any{info.Name, info.Bytes, total}, args...)...)
			return errBackupBroken
		}
		for c := first; ; {
			if uint64(info.Bytes)+uint64(len(c.GetData())) > total {
				return fail("more data than announced")
			}
			n, werr := w.Write(c.GetData())
			info.Bytes += int64(n)
			if werr != nil {
				return fail("%w", werr)
			}
			c, err = s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fail("%w", FromGRPCError(err))
			}
		}
		if uint64(info.Bytes) != total {
			return fail("stream ended early")
		}
		return nil
	})
	if broken != nil {
		return info, broken
	}
	if err != nil {
		return BackupInfo{}, err
	}
	return info, nil
}
