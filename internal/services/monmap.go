package services

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/protobuf/proto"
)

// Keys of the monmap bucket besides the epochs (kvstore.U64Key(epoch) -> encoded MonMap; every
// epoch is kept, as in Ceph, for `mon dump --epoch N`).
const (
	KeyFirstCommitted = "first_committed"
	KeyLastCommitted  = "last_committed" // U64Key(latest epoch)
)

// MaxMonName bounds a monitor name.
const MaxMonName = 64

// Member is one founding monitor (--initial-members name=addr).
type Member struct {
	Name string
	Addr string
}

// Monmap is the member map service (Ceph's MonmapMonitor, spec 7.1).
//
// Ranks: the founding members get ranks in name order (Ceph sorts by address; names are what
// operators choose and see, and name order does not change when a host is readdressed). `mon
// add` appends the new highest rank; `mon remove` shifts the ranks above the removed one down.
//
// Pending: writes are staged on a pending map at committed epoch + 1; a second write before
// the commit changes the same pending map and restages the whole of it (its ops overwrite the
// first's in the merged value). The shell must not stage a monmap write while a value holding
// a monmap change is in flight (Ceph: a proposing service is not writeable): the change ends
// the epoch anyway (rule 8). Refresh drops the pending map once its epoch is committed.
type Monmap struct {
	// Now stamps created/modified (informational, RFC 3339). Nil leaves them empty, which
	// keeps tests and the simulator deterministic.
	Now func() time.Time

	cur     *minimonv1.MonMap // committed, nil before the first commit
	pending *minimonv1.MonMap // staged, epoch cur+1 (or 1 from CreateInitial); nil if none
}

// NewMonmap returns the member map service; call Refresh before use.
func NewMonmap() *Monmap { return &Monmap{} }

// Name implements Service.
func (m *Monmap) Name() string { return kvstore.BucketMonmap }

// Refresh implements Service: loads the latest committed map.
func (m *Monmap) Refresh(st kvstore.Store) error {
	mm, err := m.Latest(st)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	m.cur = mm
	if m.pending != nil && m.cur != nil && m.pending.GetEpoch() <= m.cur.GetEpoch() {
		m.pending = nil
	}
	return nil
}

// Discard implements Service.
func (m *Monmap) Discard() { m.pending = nil }

// Current returns a copy of the committed map, nil before the first commit.
func (m *Monmap) Current() *minimonv1.MonMap {
	if m.cur == nil {
		return nil
	}
	return proto.Clone(m.cur).(*minimonv1.MonMap)
}

// Epoch returns the committed epoch, 0 before the first commit.
func (m *Monmap) Epoch() uint64 { return m.cur.GetEpoch() }

// Latest reads the newest committed map; ErrNotFound when none was committed yet.
func (m *Monmap) Latest(st kvstore.Store) (*minimonv1.MonMap, error) {
	v, err := st.Get(kvstore.BucketMonmap, []byte(KeyLastCommitted))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errorf(ErrNotFound, "no monmap committed yet")
	}
	e, err := kvstore.ParseU64Key(v)
	if err != nil {
		return nil, fmt.Errorf("services: monmap %s: %w", KeyLastCommitted, err)
	}
	return m.At(st, e)
}

// At reads the map of epoch e; ErrNotFound for an epoch that does not exist.
func (m *Monmap) At(st kvstore.Store, epoch uint64) (*minimonv1.MonMap, error) {
	v, err := st.Get(kvstore.BucketMonmap, kvstore.U64Key(epoch))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errorf(ErrNotFound, "there is no map for epoch %d", epoch)
	}
	mm := &minimonv1.MonMap{}
	if err := proto.Unmarshal(v, mm); err != nil {
		return nil, fmt.Errorf("services: monmap epoch %d: %w", epoch, err)
	}
	if mm.GetEpoch() != epoch {
		return nil, fmt.Errorf("services: monmap stored at epoch %d says epoch %d", epoch, mm.GetEpoch())
	}
	return mm, nil
}

// ValidateMonName checks a monitor name: 1..MaxMonName of [A-Za-z0-9_.-] (Ceph's entity ids).
func ValidateMonName(name string) error {
	if name == "" {
		return errorf(ErrInvalid, "monitor name is empty")
	}
	if len(name) > MaxMonName {
		return errorf(ErrInvalid, "monitor name of %d bytes exceeds %d", len(name), MaxMonName)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '.' || r == '-'
		if !ok {
			return errorf(ErrInvalid, "monitor name %q: only letters, digits, '_', '.' and '-' are allowed", name)
		}
	}
	return nil
}

// ValidateMonAddr checks an address host:port with a port in 1..65535.
func ValidateMonAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errorf(ErrInvalid, "address %q: want host:port", addr)
	}
	// Printable ASCII only: host names, IPv4, IPv6 (with a zone) need nothing else, and the
	// map's string fields must stay valid UTF-8 to encode.
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return errorf(ErrInvalid, "address %q: bad host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errorf(ErrInvalid, "address %q: port must be 1-65535", addr)
	}
	// A member address is what peers dial: a wildcard listen address (0.0.0.0, ::) reaches no one.
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return errorf(ErrInvalid, "address %q: %s is a wildcard; give the address peers dial", addr, host)
	}
	return nil
}

// CreateInitial stages epoch 1 of a new cluster (create_initial): fsid and the founding
// members, ranked in name order. ErrExists when a map is already committed or staged.
func (m *Monmap) CreateInitial(fsid string, members []Member) (Update, error) {
	if m.cur != nil || m.pending != nil {
		return Update{}, errorf(ErrExists, "monmap already exists (epoch %d)", max(m.cur.GetEpoch(), m.pending.GetEpoch()))
	}
	if fsid == "" {
		return Update{}, errorf(ErrInvalid, "fsid is empty")
	}
	if len(fsid) > 128 || strings.ContainsFunc(fsid, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return Update{}, errorf(ErrInvalid, "fsid %q: want at most 128 printable ASCII characters", fsid)
	}
	if len(members) == 0 {
		return Update{}, errorf(ErrInvalid, "no initial members")
	}
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	mm := &minimonv1.MonMap{Epoch: 1, Fsid: fsid}
	addrs := map[string]string{}
	for i, mb := range sorted {
		if err := ValidateMonName(mb.Name); err != nil {
			return Update{}, err
		}
		if err := ValidateMonAddr(mb.Addr); err != nil {
			return Update{}, err
		}
		if i > 0 && sorted[i-1].Name == mb.Name {
			return Update{}, errorf(ErrInvalid, "mon.%s is listed twice", mb.Name)
		}
		if other, ok := addrs[mb.Addr]; ok {
			return Update{}, errorf(ErrInvalid, "mon.%s and mon.%s have the same address %s", other, mb.Name, mb.Addr)
		}
		addrs[mb.Addr] = mb.Name
		mm.Mons = append(mm.Mons, &minimonv1.MonInfo{Rank: int32(i), Name: mb.Name, Addr: mb.Addr})
	}
	if ts := m.stamp(); ts != "" {
		mm.Created, mm.Modified = ts, ts
	}
	ops, err := epochOps(mm)
	if err != nil {
		return Update{}, err
	}
	ops = append(ops, put(kvstore.BucketMonmap, []byte(KeyFirstCommitted), kvstore.U64Key(1)))
	m.pending = mm
	return Update{Ops: ops, Message: fmt.Sprintf("created monmap epoch 1 with %d mons", len(mm.Mons))}, nil
}

// Add stages `mon add name addr`. The same name at the same address: no ops (idempotent, a
// resent write succeeds). The name or the address held by another monitor: ErrExists.
func (m *Monmap) Add(name, addr string) (Update, error) {
	if err := ValidateMonName(name); err != nil {
		return Update{}, err
	}
	if err := ValidateMonAddr(addr); err != nil {
		return Update{}, err
	}
	view, err := m.view()
	if err != nil {
		return Update{}, err
	}
	for _, mi := range view.GetMons() {
		switch {
		case mi.GetName() == name && mi.GetAddr() == addr:
			return Update{Message: fmt.Sprintf("mon.%s at %s already exists", name, addr)}, nil
		case mi.GetName() == name:
			return Update{}, errorf(ErrExists, "mon.%s already exists at address %s", name, mi.GetAddr())
		case mi.GetAddr() == addr:
			return Update{}, errorf(ErrExists, "address %s already in use by mon.%s", addr, mi.GetName())
		}
	}
	p := m.next()
	p.Mons = append(p.Mons, &minimonv1.MonInfo{Rank: int32(len(p.Mons)), Name: name, Addr: addr})
	ops, err := epochOps(p)
	if err != nil {
		return Update{}, err
	}
	m.pending = p
	return Update{Ops: ops, Message: fmt.Sprintf("adding mon.%s at %s", name, addr)}, nil
}

// Remove stages `mon remove name`. An absent name: no ops and a message (idempotent). The
// last monitor: ErrInvalid.
func (m *Monmap) Remove(name string) (Update, error) {
	if err := ValidateMonName(name); err != nil {
		return Update{}, err
	}
	view, err := m.view()
	if err != nil {
		return Update{}, err
	}
	i := slices.IndexFunc(view.GetMons(), func(mi *minimonv1.MonInfo) bool { return mi.GetName() == name })
	if i < 0 {
		return Update{Message: fmt.Sprintf("mon.%s does not exist or has already been removed", name)}, nil
	}
	if len(view.GetMons()) == 1 {
		return Update{}, errorf(ErrInvalid, "mon.%s is the last monitor: cannot remove it", name)
	}
	addr := view.GetMons()[i].GetAddr()
	p := m.next()
	p.Mons = slices.Delete(p.Mons, i, i+1)
	for r, mi := range p.Mons {
		mi.Rank = int32(r)
	}
	ops, err := epochOps(p)
	if err != nil {
		return Update{}, err
	}
	m.pending = p
	return Update{Ops: ops, Message: fmt.Sprintf("removing mon.%s at %s, there will be %d monitors",
		name, addr, len(p.Mons))}, nil
}

// view is the map writes are validated against: the pending one if any, else the committed.
func (m *Monmap) view() (*minimonv1.MonMap, error) {
	if m.pending != nil {
		return m.pending, nil
	}
	if m.cur == nil {
		return nil, errorf(ErrNotFound, "no monmap committed yet")
	}
	return m.cur, nil
}

// next returns a copy of the map to change: the pending one, or the committed one at the next
// epoch (create_pending). The caller makes it pending only once its ops are built, so a
// failed write leaves nothing staged.
func (m *Monmap) next() *minimonv1.MonMap {
	var p *minimonv1.MonMap
	if m.pending != nil {
		p = proto.Clone(m.pending).(*minimonv1.MonMap)
	} else {
		p = proto.Clone(m.cur).(*minimonv1.MonMap)
		p.Epoch = m.cur.GetEpoch() + 1
	}
	if ts := m.stamp(); ts != "" {
		p.Modified = ts
	}
	return p
}

func (m *Monmap) stamp() string {
	if m.Now == nil {
		return ""
	}
	return m.Now().UTC().Format(time.RFC3339)
}

// epochOps writes mm as its epoch and makes it the latest.
func epochOps(mm *minimonv1.MonMap) ([]*minimonv1.StoreOp, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(mm)
	if err != nil {
		return nil, fmt.Errorf("services: encode monmap: %w", err)
	}
	return []*minimonv1.StoreOp{
		put(kvstore.BucketMonmap, kvstore.U64Key(mm.GetEpoch()), b),
		put(kvstore.BucketMonmap, []byte(KeyLastCommitted), kvstore.U64Key(mm.GetEpoch())),
	}, nil
}

// IsMonmapChange reports whether a Paxos value changes the member map: its transaction
// touches monmap/last_committed (rule 8; paxos.Config.EndsEpoch). A value that does not decode
// is not a monmap change (the paxos core never commits one; this must not panic on it).
func IsMonmapChange(value []byte) bool {
	tx, err := Decode(value)
	if err != nil {
		return false
	}
	lc := []byte(KeyLastCommitted)
	for _, op := range tx.GetOps() {
		if op.GetBucket() != kvstore.BucketMonmap {
			continue
		}
		switch op.GetKind() {
		case minimonv1.StoreOp_PUT, minimonv1.StoreOp_ERASE:
			if bytes.Equal(op.GetKey(), lc) {
				return true
			}
		case minimonv1.StoreOp_ERASE_RANGE:
			if bytes.Compare(op.GetKey(), lc) <= 0 && (len(op.GetEnd()) == 0 || bytes.Compare(lc, op.GetEnd()) < 0) {
				return true
			}
		}
	}
	return false
}
