package kvstore

import (
	"encoding/binary"
	"fmt"
)

// Buckets of the store (design.md section 3). Every bucket is copied by sync; services may add
// data buckets of their own, which are created on first put like these.
const (
	BucketPaxos    = "paxos"    // paxos state and versions (see internal/paxos)
	BucketElection = "election" // the election epoch
	BucketMeta     = "meta"     // identity of the store (keys below)
	BucketMonmap   = "monmap"   // monmap service
	BucketConfig   = "config"   // config service
	BucketKV       = "kv"       // kv service
	BucketDedup    = "dedup"    // client write deduplication records (internal/monitor/dedup.go)
)

// Keys of BucketMeta.
const (
	KeyFSID           = "fsid"             // cluster id
	KeyName           = "name"             // this monitor's name
	KeyFormatVersion  = "format_version"   // store format, U64Key(FormatVersion)
	KeySyncInProgress = "sync_in_progress" // set while a sync overwrites the store
)

// FormatVersion is the store format this code writes.
const FormatVersion uint64 = 1

// Buckets returns the names of the buckets the project declares, in name order. It returns a
// fresh slice so callers cannot change the schema by accident.
func Buckets() []string {
	return []string{BucketConfig, BucketDedup, BucketElection, BucketKV, BucketMeta, BucketMonmap, BucketPaxos}
}

// ServiceBuckets returns the buckets of the services (each holds its own first_committed,
// last_committed and versions).
func ServiceBuckets() []string {
	return []string{BucketMonmap, BucketConfig, BucketKV}
}

// U64Key encodes v as an 8-byte big-endian key, so byte order equals numeric order.
func U64Key(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// ParseU64Key decodes a key made by U64Key.
func ParseU64Key(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("kvstore: u64 key has %d bytes, want 8", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}
