package monitor

// Offline tools for a stopped monitor (design.md section 6; ceph-mon-spec.md section 8 item 8):
// check the store, extract and inject the member map, compact the file. They are the surgery
// for the day a majority is lost for good: quorum cannot change the member map then, so
// inject-monmap writes a new epoch straight into a survivor's store (Ceph's ceph-mon
// --inject-monmap), with an epoch jump so the new map is newer than any map a dead member may
// still hold. Every tool refuses a store a running monitord holds.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// ErrStoreInUse: the store's lock is held, by a running monitord (or another offline tool).
var ErrStoreInUse = errors.New("store is in use by a running monitord")

// offlineLockTimeout is how long a tool waits for the store's lock: a running monitord holds
// it for good, so waiting longer only delays the answer.
const offlineLockTimeout = 200 * time.Millisecond

// StoreInfo is what CheckStore found in a sound store.
type StoreInfo struct {
	FSID, Name                    string
	FirstCommitted, LastCommitted uint64 // paxos
	Monmap                        *minimonv1.MonMap
}

// String is the one-line summary of monitord check.
func (i *StoreInfo) String() string {
	names := make([]string, 0, len(i.Monmap.GetMons()))
	for _, mi := range i.Monmap.GetMons() {
		names = append(names, mi.GetName())
	}
	return fmt.Sprintf("ok: fsid %s, name %s, paxos %d..%d, monmap epoch %d (%s)", i.FSID, i.Name,
		i.FirstCommitted, i.LastCommitted, i.Monmap.GetEpoch(), strings.Join(names, ","))
}

// openOffline opens the store of dataDir for a tool; a held lock is ErrStoreInUse.
func openOffline(dataDir string, readOnly bool) (*kvstore.DB, error) {
	path := filepath.Join(dataDir, StoreFile)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no store at %s", path)
		}
		return nil, err
	}
	st, err := kvstore.Open(path, kvstore.Options{ReadOnly: readOnly, Timeout: offlineLockTimeout})
	if errors.Is(err, kvstore.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrStoreInUse, path)
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

// CheckStore verifies the store of a stopped monitor: its identity (meta), no interrupted sync,
// the paxos range and every committed version in it, the member map holding this monitor, and
// bbolt's own page-level consistency. The error names the first problem found.
func CheckStore(dataDir string) (*StoreInfo, error) {
	st, err := openOffline(dataDir, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }()
	info, err := checkStore(st)
	if err != nil {
		return nil, withPath(st.Path(), err)
	}
	return info, nil
}

func checkStore(st *kvstore.DB) (*StoreInfo, error) {
	info := &StoreInfo{}
	fsid, err := metaValue(st, kvstore.KeyFSID)
	if err != nil {
		return nil, err
	}
	name, err := metaValue(st, kvstore.KeyName)
	if err != nil {
		return nil, err
	}
	info.FSID, info.Name = string(fsid), string(name)
	fv, err := metaValue(st, kvstore.KeyFormatVersion)
	if err != nil {
		return nil, err
	}
	if v, perr := kvstore.ParseU64Key(fv); perr != nil || v != kvstore.FormatVersion {
		return nil, fmt.Errorf("meta/%s is %x, this monitord reads format %d", kvstore.KeyFormatVersion, fv, kvstore.FormatVersion)
	}
	if m, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress)); err != nil {
		return nil, err
	} else if m != nil {
		return nil, errors.New("an interrupted sync: the store is partial (a start with a reachable quorum syncs it again)")
	}

	fc, err := readU64(st, paxos.KeyFirstCommitted)
	if err != nil {
		return nil, err
	}
	lc, err := readU64(st, paxos.KeyLastCommitted)
	if err != nil {
		return nil, err
	}
	info.FirstCommitted, info.LastCommitted = fc, lc
	switch {
	case lc == 0 && fc != 0:
		return nil, fmt.Errorf("paxos first_committed %d with no last_committed", fc)
	case lc != 0 && fc == 0:
		return nil, fmt.Errorf("paxos last_committed %d with no first_committed", lc)
	case fc > lc:
		return nil, fmt.Errorf("paxos first_committed %d > last_committed %d", fc, lc)
	}
	for v := fc; v != 0 && v <= lc; v++ {
		val, err := st.Get(paxos.Bucket, kvstore.U64Key(v))
		if err != nil {
			return nil, err
		}
		if val == nil {
			return nil, fmt.Errorf("paxos version %d (of %d..%d) is missing", v, fc, lc)
		}
		tx, err := services.Decode(val)
		if err == nil {
			err = kvstore.ValidateTransaction(tx)
		}
		if err != nil {
			return nil, fmt.Errorf("paxos version %d does not decode as a transaction: %v", v, err)
		}
	}

	mm, err := membersInForce(st)
	if err != nil {
		return nil, err
	}
	if rankOf(mm, info.Name) < 0 {
		return nil, fmt.Errorf("monmap epoch %d does not hold this monitor (mon.%s)", mm.GetEpoch(), info.Name)
	}
	if mm.GetFsid() != "" && mm.GetFsid() != info.FSID {
		return nil, fmt.Errorf("monmap epoch %d belongs to cluster %s, the store to %s", mm.GetEpoch(), mm.GetFsid(), info.FSID)
	}
	info.Monmap = mm
	if err := st.Check(); err != nil {
		return nil, err
	}
	return info, nil
}

func metaValue(st kvstore.Store, key string) ([]byte, error) {
	v, err := st.Get(kvstore.BucketMeta, []byte(key))
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("meta/%s is missing: not a monitor store, or its first start never completed", key)
	}
	return v, nil
}

// membersInForce is the member map a start would use (loadIdentity): the latest committed
// monmap, or the founding/joined map in meta when that is newer or nothing is committed yet.
func membersInForce(st kvstore.Store) (*minimonv1.MonMap, error) {
	mm, err := services.NewMonmap().Latest(st)
	if err != nil && !errors.Is(err, services.ErrNotFound) {
		return nil, fmt.Errorf("the latest monmap: %w", err)
	}
	b, err := st.Get(kvstore.BucketMeta, []byte(KeyInitialMembers))
	if err != nil {
		return nil, err
	}
	if b == nil {
		if mm == nil {
			return nil, errors.New("the store holds neither a monmap nor the founding members")
		}
		return mm, nil
	}
	first := &minimonv1.MonMap{}
	if err := proto.Unmarshal(b, first); err != nil {
		return nil, fmt.Errorf("meta/%s does not decode: %w", KeyInitialMembers, err)
	}
	if mm == nil || first.GetEpoch() > mm.GetEpoch() {
		return first, nil
	}
	return mm, nil
}

// ExtractMonmap returns the member map in force in a stopped monitor's store (the latest
// committed monmap; before the first commit, the founding members as epoch 0).
func ExtractMonmap(dataDir string) (*minimonv1.MonMap, error) {
	st, err := openOffline(dataDir, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }()
	mm, err := membersInForce(st)
	if err != nil {
		return nil, withPath(st.Path(), err)
	}
	return mm, nil
}

// MarshalMonmapJSON renders a map for reading and hand editing (every field shown, rank 0
// included).
func MarshalMonmapJSON(mm *minimonv1.MonMap) ([]byte, error) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(mm)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseMonmapJSON reads a map written by MarshalMonmapJSON (possibly edited); unknown fields
// are an error, so a misspelt field is not silently dropped.
func ParseMonmapJSON(b []byte) (*minimonv1.MonMap, error) {
	mm := &minimonv1.MonMap{}
	if err := protojson.Unmarshal(b, mm); err != nil {
		return nil, fmt.Errorf("monmap json: %w", err)
	}
	return mm, nil
}

// KeepMonmap builds, from cur, the map holding only the named monitors (their addresses
// unchanged), with ranks reassigned in name order as for a founding map.
func KeepMonmap(cur *minimonv1.MonMap, names []string) (*minimonv1.MonMap, error) {
	if len(names) == 0 {
		return nil, errors.New("--keep names no monitor")
	}
	out := proto.Clone(cur).(*minimonv1.MonMap)
	out.Mons = nil
	for _, n := range names {
		i := slices.IndexFunc(cur.GetMons(), func(mi *minimonv1.MonInfo) bool { return mi.GetName() == n })
		if i < 0 {
			return nil, fmt.Errorf("mon.%s is not in monmap epoch %d", n, cur.GetEpoch())
		}
		if slices.ContainsFunc(out.Mons, func(mi *minimonv1.MonInfo) bool { return mi.GetName() == n }) {
			return nil, fmt.Errorf("mon.%s is named twice", n)
		}
		out.Mons = append(out.Mons, proto.Clone(cur.GetMons()[i]).(*minimonv1.MonInfo))
	}
	slices.SortFunc(out.Mons, func(a, b *minimonv1.MonInfo) int { return strings.Compare(a.GetName(), b.GetName()) })
	for r, mi := range out.Mons {
		mi.Rank = int32(r)
	}
	return out, nil
}

// validateInjected checks a map to inject into the store of mon.name of cluster fsid: names and
// addresses valid and unique, ranks 0..n-1 (each once; the map is put in rank order), the fsid
// the store's (an empty one is filled in), this monitor present.
func validateInjected(mm *minimonv1.MonMap, fsid, name string) (*minimonv1.MonMap, error) {
	mm = proto.Clone(mm).(*minimonv1.MonMap)
	if len(mm.GetMons()) == 0 {
		return nil, errors.New("the map holds no monitor")
	}
	if mm.GetFsid() != "" && !strings.EqualFold(mm.GetFsid(), fsid) {
		return nil, fmt.Errorf("the map is of cluster %s, the store of %s", mm.GetFsid(), fsid)
	}
	mm.Fsid = fsid
	names, addrs := map[string]bool{}, map[string]string{}
	for _, mi := range mm.GetMons() {
		if mi == nil {
			return nil, errors.New("the map holds an empty entry")
		}
		if err := services.ValidateMonName(mi.GetName()); err != nil {
			return nil, err
		}
		if err := services.ValidateMonAddr(mi.GetAddr()); err != nil {
			return nil, fmt.Errorf("mon.%s: %w", mi.GetName(), err)
		}
		if names[mi.GetName()] {
			return nil, fmt.Errorf("mon.%s is listed twice", mi.GetName())
		}
		names[mi.GetName()] = true
		if other, ok := addrs[mi.GetAddr()]; ok {
			return nil, fmt.Errorf("mon.%s and mon.%s have the same address %s", other, mi.GetName(), mi.GetAddr())
		}
		addrs[mi.GetAddr()] = mi.GetName()
	}
	slices.SortFunc(mm.Mons, func(a, b *minimonv1.MonInfo) int { return int(a.GetRank()) - int(b.GetRank()) })
	for r, mi := range mm.GetMons() {
		if mi.GetRank() != int32(r) {
			return nil, fmt.Errorf("ranks must be 0..%d, each once (mon.%s has rank %d)", len(mm.Mons)-1, mi.GetName(), mi.GetRank())
		}
	}
	if !names[name] {
		return nil, fmt.Errorf("the map does not hold this monitor (mon.%s): it could never start on it", name)
	}
	return mm, nil
}

// InjectOptions shape InjectMonmap.
type InjectOptions struct {
	// EpochJump: the new map's epoch is the current one plus max(1, EpochJump). A jump beyond
	// any epoch a dead member might have seen keeps an old map from ever looking newer.
	EpochJump uint64
	// Now stamps the map's modified time (nil: time.Now).
	Now func() time.Time
}

// InjectMonmap writes mm as a new member map epoch straight into a stopped monitor's store,
// not through Paxos (quorum is lost): monmap/<epoch> and monmap/last_committed, and the map as
// the node's membership (meta/initial_members), in one transaction. It returns the map as
// written. The started monitor then runs on it; with only itself left it is a quorum of one.
func InjectMonmap(dataDir string, mm *minimonv1.MonMap, o InjectOptions) (*minimonv1.MonMap, error) {
	st, err := openOffline(dataDir, false)
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }()
	out, err := injectMonmap(st, mm, o)
	if err != nil {
		return nil, withPath(st.Path(), err)
	}
	return out, nil
}

func injectMonmap(st *kvstore.DB, mm *minimonv1.MonMap, o InjectOptions) (*minimonv1.MonMap, error) {
	fsid, err := metaValue(st, kvstore.KeyFSID)
	if err != nil {
		return nil, err
	}
	name, err := metaValue(st, kvstore.KeyName)
	if err != nil {
		return nil, err
	}
	if m, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress)); err != nil {
		return nil, err
	} else if m != nil {
		return nil, errors.New("an interrupted sync: the store is partial; inject into a complete survivor")
	}
	cur, err := membersInForce(st)
	if err != nil {
		return nil, err
	}
	// An accepted but uncommitted member map change would be re-proposed by the next leader
	// (recovery) and put the old membership back over the injected one: refuse rather than
	// guess whether that value was chosen.
	if pv, err := readU64(st, paxos.KeyPendingV); err != nil {
		return nil, err
	} else if lc, err := readU64(st, paxos.KeyLastCommitted); err != nil {
		return nil, err
	} else if pv > lc {
		val, err := st.Get(paxos.Bucket, kvstore.U64Key(pv))
		if err != nil {
			return nil, err
		}
		if services.IsMonmapChange(val) {
			return nil, fmt.Errorf("paxos version %d (accepted, not committed) changes the member map; "+
				"injecting now would be undone by its recovery", pv)
		}
	}
	out, err := validateInjected(mm, string(fsid), string(name))
	if err != nil {
		return nil, err
	}
	out.Epoch = cur.GetEpoch() + max(1, o.EpochJump)
	if out.Created == "" {
		out.Created = cur.GetCreated()
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	out.Modified = now().UTC().Format(time.RFC3339)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return nil, err
	}
	put := func(bucket string, key []byte, v []byte) *minimonv1.StoreOp {
		return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: bucket, Key: key, Value: v}
	}
	ops := []*minimonv1.StoreOp{
		put(kvstore.BucketMonmap, kvstore.U64Key(out.Epoch), b),
		put(kvstore.BucketMonmap, []byte(services.KeyLastCommitted), kvstore.U64Key(out.Epoch)),
		put(kvstore.BucketMeta, []byte(KeyInitialMembers), b),
	}
	if fc, err := st.Get(kvstore.BucketMonmap, []byte(services.KeyFirstCommitted)); err != nil {
		return nil, err
	} else if fc == nil {
		ops = append(ops, put(kvstore.BucketMonmap, []byte(services.KeyFirstCommitted), kvstore.U64Key(out.Epoch)))
	}
	if err := st.Apply(&minimonv1.Transaction{Ops: ops}); err != nil {
		return nil, err
	}
	return out, nil
}

// withPath names the store in err unless kvstore already did.
func withPath(path string, err error) error {
	if strings.Contains(err.Error(), path) {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}

// CompactStore rewrites a stopped monitor's store file without its free pages (copy, fsync,
// atomic rename) and returns the file sizes before and after.
func CompactStore(dataDir string) (before, after int64, err error) {
	path := filepath.Join(dataDir, StoreFile)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("no store at %s", path)
		}
		return 0, 0, err
	}
	before, after, err = kvstore.Compact(path, kvstore.Options{Timeout: offlineLockTimeout})
	if errors.Is(err, kvstore.ErrLocked) {
		return 0, 0, fmt.Errorf("%w: %s", ErrStoreInUse, path)
	}
	return before, after, err
}
