package kvstore

import (
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// keyPaxosLastCommitted is paxos's last_committed key (internal/paxos.KeyLastCommitted; that
// package imports this one, so the name is repeated here).
const keyPaxosLastCommitted = "last_committed"

// SnapshotInfo describes a consistent copy of the store, read in the same read transaction as
// the copy itself.
type SnapshotInfo struct {
	LastCommitted  uint64 // paxos last_committed of the copy (0 when absent)
	Size           int64  // bytes the copy will have
	SyncInProgress bool   // the store is half overwritten by a sync: the copy is not a usable store
}

// Snapshot writes a consistent copy of the whole store file to w (bbolt's Tx.WriteTo inside one
// read transaction, so writers keep committing meanwhile and the copy is the store as of one
// commit). begin, if not nil, is called first with what the copy holds; an error from it
// aborts before any byte is written. The read transaction lasts until w has taken every byte,
// and bbolt cannot remap a growing file while it lasts: give it a fast w (a local file) and
// stream from there to a slow reader.
func (d *DB) Snapshot(w io.Writer, begin func(SnapshotInfo) error) (info SnapshotInfo, n int64, err error) {
	defer d.guard(&err)
	err = d.db.View(func(tx *bolt.Tx) error {
		info.Size = tx.Size()
		if b := tx.Bucket([]byte(BucketPaxos)); b != nil {
			if v := b.Get([]byte(keyPaxosLastCommitted)); v != nil {
				lc, perr := ParseU64Key(v)
				if perr != nil {
					return fmt.Errorf("%w: %s: paxos/last_committed: %v", ErrCorrupt, d.path, perr)
				}
				info.LastCommitted = lc
			}
		}
		if b := tx.Bucket([]byte(BucketMeta)); b != nil && b.Get([]byte(KeySyncInProgress)) != nil {
			info.SyncInProgress = true
		}
		if begin != nil {
			if err := begin(info); err != nil {
				return err
			}
		}
		var werr error
		n, werr = tx.WriteTo(w)
		return werr
	})
	return info, n, d.wrap(err)
}

// WriteTo implements io.WriterTo: a consistent copy of the store file (see Snapshot).
func (d *DB) WriteTo(w io.Writer) (int64, error) {
	_, n, err := d.Snapshot(w, nil)
	return n, err
}
