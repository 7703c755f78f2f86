package monitor

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// BackupChunkSize is the most store bytes one BackupChunk carries.
const BackupChunkSize = 1 << 20

// backupState is the monitor's one running backup (a second is refused: each copies the whole
// store to disk first).
type backupState struct {
	running atomic.Bool
	// spooled, when set (tests), runs after the copy is spooled and before it is streamed.
	spooled atomic.Pointer[func()]
	// chunk, when not zero (tests), replaces BackupChunkSize.
	chunk atomic.Int64
}

// errSyncing: the store is being overwritten by a full sync; a copy would be half of two stores.
var errSyncing = errors.New("the store is being synchronized from another monitor")

// Backup streams a consistent copy of this monitor's own store (no quorum involved: it is what
// this monitor has committed, up to the last_committed in the first chunk). The copy is taken
// in this handler's goroutine in one bbolt read transaction, never on the event loop, and
// spooled to an unlinked file in the data dir first: the read transaction then lasts as long as
// a local disk copy, not as long as a slow client takes, because bbolt cannot grow the file
// (remap) for the store writer while a read transaction is open.
func (s *clientServer) Backup(_ *minimonv1.BackupRequest, stream grpc.ServerStreamingServer[minimonv1.BackupChunk]) error {
	m := s.m
	ctx := stream.Context()
	if m.isStopping() {
		return status.Error(codes.Unavailable, "backup: monitor is shutting down")
	}
	if !m.backup.running.CompareAndSwap(false, true) {
		return status.Error(codes.ResourceExhausted, "a backup is already running")
	}
	defer m.backup.running.Store(false)

	start := time.Now()
	f, err := os.CreateTemp(m.cfg.DataDir, ".backup-*.tmp")
	if err != nil {
		return status.Errorf(codes.Internal, "backup: spool file: %v", err)
	}
	// Unlinked at once: a crash leaves no stray file (where the OS allows removing an open file).
	_ = os.Remove(f.Name())
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	info, n, err := m.store.Snapshot(f, func(i kvstore.SnapshotInfo) error {
		if i.SyncInProgress {
			return errSyncing
		}
		return nil
	})
	switch {
	case errors.Is(err, errSyncing):
		return status.Errorf(codes.FailedPrecondition, "backup: %v; try another monitor", err)
	case errors.Is(err, kvstore.ErrClosed):
		return status.Error(codes.Unavailable, "backup: monitor is shutting down")
	case err != nil:
		return status.Errorf(codes.Internal, "backup: copy the store: %v", err)
	case n != info.Size:
		return status.Errorf(codes.Internal, "backup: copied %d bytes of a %d byte store", n, info.Size)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "backup: spool file: %v", err)
	}
	if hook := m.backup.spooled.Load(); hook != nil {
		(*hook)()
	}

	size := int64(BackupChunkSize)
	if c := m.backup.chunk.Load(); c > 0 {
		size = c
	}
	buf := make([]byte, size)
	var sent int64
	first := true
	for first || sent < n {
		k, rerr := io.ReadFull(f, buf[:min(int64(len(buf)), n-sent)])
		if rerr != nil {
			return status.Errorf(codes.Internal, "backup: read the spool file at %d: %v", sent, rerr)
		}
		c := &minimonv1.BackupChunk{Data: buf[:k]}
		if first {
			c.LastCommitted, c.TotalBytes, c.Name = info.LastCommitted, uint64(n), m.cfg.Name
			first = false
		}
		if err := stream.Send(c); err != nil {
			return err
		}
		sent += int64(k)
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
	}
	m.lg.Info("backup served", zap.Uint64("last_committed", info.LastCommitted), zap.Int64("bytes", n),
		zap.Duration("took", time.Since(start)))
	return nil
}
