package services

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// Limits of the key/value service.
const (
	// DefaultMaxEntrySize is Ceph's mon_config_key_max_entry_size (64 KiB).
	DefaultMaxEntrySize = 64 << 10
	// MaxKeyLen bounds a key. Ceph has no explicit bound; 1 KiB is far above any key Ceph's
	// daemons write (mgr/<module>/<name>) and far below bbolt's 32 KiB key limit, so a key
	// never fails in the store after it was accepted here.
	MaxKeyLen = 1024
	// DefaultMaxListKeys caps one List reply (KVListRequest.limit 0 or above it).
	DefaultMaxListKeys = 10000
)

// KVOptions configures the key/value service. Zero fields take the defaults.
type KVOptions struct {
	MaxEntrySize int // mon_config_key_max_entry_size, bytes
	MaxListKeys  int // most keys one List returns
}

// KV is the key/value service (Ceph's config-key, spec 7.2). Its data are raw user keys in
// bucket kvstore.BucketKV (Ceph: prefix mon_config_key). It keeps no version of its own and no
// per-version deltas: a write's version is the Paxos version that commits it, and watchers
// are fed by the shell from committed values. So the bucket holds user keys only and a user
// key can never collide with service bookkeeping.
type KV struct {
	maxEntry int
	maxList  int
}

// NewKV returns the key/value service.
func NewKV(opts KVOptions) *KV {
	k := &KV{maxEntry: opts.MaxEntrySize, maxList: opts.MaxListKeys}
	if k.maxEntry <= 0 {
		k.maxEntry = DefaultMaxEntrySize
	}
	if k.maxList <= 0 {
		k.maxList = DefaultMaxListKeys
	}
	return k
}

// Name implements Service.
func (k *KV) Name() string { return kvstore.BucketKV }

// Refresh implements Service. KV keeps nothing in memory: reads go to the store.
func (k *KV) Refresh(kvstore.Store) error { return nil }

// Discard implements Service. KV stages nothing beyond the ops it returned.
func (k *KV) Discard() {}

// ValidateKey checks a config-key key: non-empty, at most MaxKeyLen bytes, valid UTF-8 without
// control characters (so no NUL, newline or escape sequence ends up in `config-key ls`).
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errorf(ErrInvalid, "key is empty")
	case len(key) > MaxKeyLen:
		return errorf(ErrInvalid, "key of %d bytes exceeds %d", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return errorf(ErrInvalid, "key %q is not valid UTF-8", key)
	}
	for i, r := range key {
		if unicode.IsControl(r) {
			return errorf(ErrInvalid, "key %q has a control character at byte %d", key, i)
		}
	}
	return nil
}

// Set validates and stages `config-key set key value`. A value above the entry size limit is
// refused with ErrTooBig and nothing is staged.
func (k *KV) Set(key string, value []byte) (Update, error) {
	if err := ValidateKey(key); err != nil {
		return Update{}, err
	}
	if len(value) > k.maxEntry {
		return Update{}, errorf(ErrTooBig, "value of %d bytes exceeds mon_config_key_max_entry_size %d",
			len(value), k.maxEntry)
	}
	// Never nil: an empty value is a present key (the store tells empty from absent).
	v := make([]byte, len(value))
	copy(v, value)
	return Update{
		Ops:     []*minimonv1.StoreOp{put(kvstore.BucketKV, []byte(key), v)},
		Message: "set " + key,
	}, nil
}

// Rm validates and stages `config-key rm key`. Removing an absent key succeeds; st (the
// committed state) only picks the message. The erase is staged even then, so it also removes
// a value staged by a Set that is not committed yet (the client's order wins).
func (k *KV) Rm(st kvstore.Store, key string) (Update, error) {
	if err := ValidateKey(key); err != nil {
		return Update{}, err
	}
	ok, err := k.Exists(st, key)
	if err != nil {
		return Update{}, err
	}
	msg := "key deleted"
	if !ok {
		msg = "key " + key + " does not exist, nothing deleted"
	}
	return Update{Ops: []*minimonv1.StoreOp{erase(kvstore.BucketKV, []byte(key))}, Message: msg}, nil
}

// Get returns the value of key, ErrNotFound when absent.
func (k *KV) Get(st kvstore.Store, key string) ([]byte, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	v, err := st.Get(kvstore.BucketKV, []byte(key))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errorf(ErrNotFound, "key %s does not exist", key)
	}
	return v, nil
}

// Exists reports whether key is present.
func (k *KV) Exists(st kvstore.Store, key string) (bool, error) {
	if err := ValidateKey(key); err != nil {
		return false, err
	}
	v, err := st.Get(kvstore.BucketKV, []byte(key))
	if err != nil {
		return false, err
	}
	return v != nil, nil
}

var errStop = errors.New("stop")

// List returns the keys starting with prefix, in key (byte) order, at most limit of them
// (limit <= 0 or above the server's maximum: the maximum); truncated says more keys match.
func (k *KV) List(st kvstore.Store, prefix string, limit int) (keys []string, truncated bool, err error) {
	if limit <= 0 || limit > k.maxList {
		limit = k.maxList
	}
	keys = []string{}
	err = st.ForEach(kvstore.BucketKV, []byte(prefix), func(key, _ []byte) error {
		if !strings.HasPrefix(string(key), prefix) {
			return errStop // keys are ordered: past the prefix nothing matches any more
		}
		if len(keys) == limit {
			truncated = true
			return errStop
		}
		keys = append(keys, string(key))
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, false, err
	}
	return keys, truncated, nil
}
