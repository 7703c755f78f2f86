package services

// The central config service (Ceph's ConfigMonitor, spec 7.3; design.md 5).
//
// Store layout, bucket kvstore.BucketConfig ("config"):
//
//	version                      U64Key(config version): count of committed changes (absent: 0)
//	e/<section>/<mask>/<name>    the value of one entry (raw bytes; may be empty). <mask> is
//	                             "", "host:H", "class:C" or "host:H/class:C" (canonical order),
//	                             so e.g. "e/osd//debug_ms", "e/osd/host:a/class:ssd/x". A
//	                             section and a name never hold '/', so the key splits
//	                             unambiguously: first segment, last segment, the rest.
//	h/<U64Key(v)>                the ConfigChange that made version v (protobuf). Its `set`
//	                             holds the new values, its `removed` the OLD values of every
//	                             entry the change overwrote or deleted (Ceph's +key / -key), so
//	                             a change can be undone from its record alone.
//
// Every change writes the entries, h/<v> and version in one Paxos value, and trims h/ to the
// last HistoryKeep changes in the same value (an erase range below v-keep+1).
//
// Pending: the leader stages writes against the committed state plus every change it staged
// that has not committed yet (in flight or queued in Paxos), so two writes before a commit
// build on each other and get consecutive versions. Refresh drops staged changes once their
// version is committed; Discard drops them all (the shell calls it when leadership changes:
// the staged values either fail or commit through recovery, and a refresh picks that up). The
// shell must stage only while the committed state in memory is current (no recovered value of
// an earlier epoch still being applied), or versions would collide.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/protobuf/proto"
)

// Limits and defaults of the config service.
const (
	// DefaultConfigMaxValueSize bounds one option's value (64 KiB; design.md 5).
	DefaultConfigMaxValueSize = 64 << 10
	// DefaultConfigHistoryKeep is mon_config_history_keep: changes kept for log and reset.
	DefaultConfigHistoryKeep = 100
	// MaxConfigNameLen bounds an option name (Ceph's longest are under 64 bytes).
	MaxConfigNameLen = 256
	// MaxConfigMaskLen bounds a host or class name (a DNS name is at most 253 bytes).
	MaxConfigMaskLen = 255
	// MaxConfigIDLen bounds the id of a type.id section.
	MaxConfigIDLen = 128
)

// Keys of the config bucket (see the layout above).
const (
	configKeyVersion     = "version"
	configEntryPrefix    = "e/"
	configHistoryPrefix  = "h/"
	configSectionGlobal  = "global"
	configMaskHostPrefix = "host:"
	configMaskClassPfx   = "class:"
)

// configTypes are the entity types a WHO may name, in Ceph's dump order.
var configTypes = []string{"mon", "mgr", "osd", "mds", "client"}

// ConfigOptions configures the config service. Zero fields take the defaults.
type ConfigOptions struct {
	MaxValueSize int // bytes of one value
	HistoryKeep  int // mon_config_history_keep
}

// Who is a parsed WHO: a section plus optional masks.
type Who struct {
	Section string // "global", a type, or type.id
	Type    string // "" for global
	Host    string // mask host:NAME, "" if none
	Class   string // mask class:NAME, "" if none
}

// Mask is the canonical mask string: "", "host:H", "class:C" or "host:H/class:C".
func (w Who) Mask() string {
	var parts []string
	if w.Host != "" {
		parts = append(parts, configMaskHostPrefix+w.Host)
	}
	if w.Class != "" {
		parts = append(parts, configMaskClassPfx+w.Class)
	}
	return strings.Join(parts, "/")
}

// String is the canonical WHO: section then masks.
func (w Who) String() string {
	if m := w.Mask(); m != "" {
		return w.Section + "/" + m
	}
	return w.Section
}

// ParseWho parses `global`, a type, or `type.id`, optionally followed by /host:NAME and/or
// /class:NAME (in either order, each at most once).
func ParseWho(who string) (Who, error) {
	parts := strings.Split(who, "/")
	var w Who
	sec := parts[0]
	typ, id, dotted := strings.Cut(sec, ".")
	switch {
	case sec == configSectionGlobal:
	case !slices.Contains(configTypes, typ):
		return Who{}, errorf(ErrInvalid, "unknown WHO type '%s' (global, mon, osd, mds, mgr, client or TYPE.ID)",
			clip(typ))
	case dotted && (id == "" || len(id) > MaxConfigIDLen || !entityChars(id)):
		return Who{}, errorf(ErrInvalid, "invalid id in WHO '%s': 1-%d of letters, digits, '_', '.', '-'",
			clip(sec), MaxConfigIDLen)
	default:
		w.Type = typ
	}
	w.Section = sec
	for _, m := range parts[1:] {
		var dst *string
		var val string
		switch {
		case strings.HasPrefix(m, configMaskHostPrefix):
			dst, val = &w.Host, m[len(configMaskHostPrefix):]
		case strings.HasPrefix(m, configMaskClassPfx):
			dst, val = &w.Class, m[len(configMaskClassPfx):]
		default:
			return Who{}, errorf(ErrInvalid, "invalid mask '%s' in WHO: want host:NAME or class:NAME", clip(m))
		}
		if *dst != "" {
			return Who{}, errorf(ErrInvalid, "mask '%s' given twice in WHO", clip(m))
		}
		if val == "" || len(val) > MaxConfigMaskLen || !entityChars(val) {
			return Who{}, errorf(ErrInvalid, "invalid mask '%s' in WHO: 1-%d of letters, digits, '_', '.', '-'",
				clip(m), MaxConfigMaskLen)
		}
		*dst = val
	}
	return w, nil
}

// clip shortens user input echoed in an error message and keeps it valid UTF-8.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

func entityChars(s string) bool {
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '.' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// ValidateConfigName checks an option name: 1..MaxConfigNameLen of [a-z0-9_].
func ValidateConfigName(name string) error {
	if name == "" || len(name) > MaxConfigNameLen {
		return errorf(ErrInvalid, "invalid option name '%s': 1-%d of [a-z0-9_]", clip(name), MaxConfigNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return errorf(ErrInvalid, "invalid option name '%s': only [a-z0-9_] is allowed", clip(name))
		}
	}
	return nil
}

// configKey identifies one entry.
type configKey struct{ section, mask, name string }

func (k configKey) storeKey() []byte {
	return []byte(configEntryPrefix + k.section + "/" + k.mask + "/" + k.name)
}

func parseConfigKey(b []byte) (configKey, bool) {
	s, ok := strings.CutPrefix(string(b), configEntryPrefix)
	if !ok {
		return configKey{}, false
	}
	i, j := strings.IndexByte(s, '/'), strings.LastIndexByte(s, '/')
	if i < 0 || j == i {
		return configKey{}, false
	}
	return configKey{section: s[:i], mask: s[i+1 : j], name: s[j+1:]}, true
}

func (k configKey) entry(value string) *minimonv1.ConfigEntry {
	return &minimonv1.ConfigEntry{Section: k.section, Mask: k.mask, Name: k.name, Value: value}
}

func keyOf(e *minimonv1.ConfigEntry) configKey {
	return configKey{section: e.GetSection(), mask: e.GetMask(), name: e.GetName()}
}

// Config is the central config service.
type Config struct {
	// Now stamps history records (RFC 3339, informational). Nil leaves them empty, which keeps
	// tests and the simulator deterministic.
	Now func() time.Time

	maxValue int
	keep     int

	version uint64               // committed config version
	entries map[configKey]string // committed entries
	pending []*minimonv1.ConfigChange
}

var _ Service = (*Config)(nil)

// NewConfig returns the config service; call Refresh before use.
func NewConfig(opts ConfigOptions) *Config {
	c := &Config{maxValue: opts.MaxValueSize, keep: opts.HistoryKeep, entries: map[configKey]string{}}
	if c.maxValue <= 0 {
		c.maxValue = DefaultConfigMaxValueSize
	}
	if c.keep <= 0 {
		c.keep = DefaultConfigHistoryKeep
	}
	return c
}

// Name implements Service.
func (c *Config) Name() string { return kvstore.BucketConfig }

// Refresh implements Service: reloads the committed entries when the committed version moved
// (one Get per commit otherwise: every commit of every service refreshes every service) and
// drops staged changes the store now holds.
func (c *Config) Refresh(st kvstore.Store) error {
	v, err := readConfigVersion(st)
	if err != nil {
		return err
	}
	if v != c.version || (v == 0 && len(c.entries) > 0) {
		entries, err := readEntries(st)
		if err != nil {
			return err
		}
		c.entries, c.version = entries, v
	}
	c.pending = slices.DeleteFunc(c.pending, func(ch *minimonv1.ConfigChange) bool { return ch.GetVersion() <= v })
	if len(c.pending) > 0 && c.pending[0].GetVersion() != v+1 {
		c.pending = nil // a gap: what we staged cannot follow the store any more
	}
	return nil
}

// Discard implements Service.
func (c *Config) Discard() { c.pending = nil }

// Version is the config version of the state writes are validated against: the newest staged
// change, else the committed version. After a write it is the version that write produced.
func (c *Config) Version() uint64 {
	if n := len(c.pending); n > 0 {
		return c.pending[n-1].GetVersion()
	}
	return c.version
}

// CommittedVersion is the committed config version.
func (c *Config) CommittedVersion() uint64 { return c.version }

// view returns the value of k in committed state plus staged changes.
func (c *Config) view(k configKey) (string, bool) {
	for i := len(c.pending) - 1; i >= 0; i-- {
		ch := c.pending[i]
		for _, e := range ch.GetSet() {
			if keyOf(e) == k {
				return e.GetValue(), true
			}
		}
		for _, e := range ch.GetRemoved() {
			if keyOf(e) == k {
				return "", false // removed (an overwrite would have matched in set above)
			}
		}
	}
	v, ok := c.entries[k]
	return v, ok
}

// viewAll returns the whole map as staged.
func (c *Config) viewAll() map[configKey]string {
	m := make(map[configKey]string, len(c.entries))
	for k, v := range c.entries {
		m[k] = v
	}
	for _, ch := range c.pending {
		applyChange(m, ch)
	}
	return m
}

func applyChange(m map[configKey]string, ch *minimonv1.ConfigChange) {
	for _, e := range ch.GetRemoved() {
		delete(m, keyOf(e))
	}
	for _, e := range ch.GetSet() {
		m[keyOf(e)] = e.GetValue()
	}
}

func undoChange(m map[configKey]string, ch *minimonv1.ConfigChange) {
	for _, e := range ch.GetSet() {
		delete(m, keyOf(e))
	}
	for _, e := range ch.GetRemoved() {
		m[keyOf(e)] = e.GetValue()
	}
}

// Set stages `config set who name value`. The value already in force for exactly that WHO:
// no ops (nothing to propose; the reply goes out at once).
func (c *Config) Set(who, name, value string) (Update, error) {
	w, err := ParseWho(who)
	if err != nil {
		return Update{}, err
	}
	if err := ValidateConfigName(name); err != nil {
		return Update{}, err
	}
	if len(value) > c.maxValue {
		return Update{}, errorf(ErrTooBig, "value of %d bytes exceeds the limit of %d", len(value), c.maxValue)
	}
	if !utf8.ValidString(value) {
		return Update{}, errorf(ErrInvalid, "value of %s is not valid UTF-8", name)
	}
	k := configKey{section: w.Section, mask: w.Mask(), name: name}
	old, had := c.view(k)
	if had && old == value {
		return Update{Message: fmt.Sprintf("%s %s is already %q", w, name, clip(value))}, nil
	}
	ch := &minimonv1.ConfigChange{Set: []*minimonv1.ConfigEntry{k.entry(value)}}
	if had {
		ch.Removed = []*minimonv1.ConfigEntry{k.entry(old)}
	}
	return c.stage(ch, fmt.Sprintf("set %s %s", w, name))
}

// Rm stages `config rm who name`. Nothing there: no ops and a message saying so (success).
func (c *Config) Rm(who, name string) (Update, error) {
	w, err := ParseWho(who)
	if err != nil {
		return Update{}, err
	}
	if err := ValidateConfigName(name); err != nil {
		return Update{}, err
	}
	k := configKey{section: w.Section, mask: w.Mask(), name: name}
	old, had := c.view(k)
	if !had {
		return Update{Message: fmt.Sprintf("%s %s is not set, nothing removed", w, name)}, nil
	}
	ch := &minimonv1.ConfigChange{Removed: []*minimonv1.ConfigEntry{k.entry(old)}}
	return c.stage(ch, fmt.Sprintf("removed %s %s", w, name))
}

// Reset stages `config reset version`: the map as it was right after change `version`
// committed (0: empty), recorded as a new change. ErrNotFound when the history needed was
// trimmed, ErrInvalid for a version not reached yet. The current map already equal: no ops.
func (c *Config) Reset(st kvstore.Store, version uint64) (Update, error) {
	cur := c.Version()
	if version > cur {
		return Update{}, errorf(ErrInvalid, "version %d is in the future (current version is %d)", version, cur)
	}
	target := c.viewAll()
	// Undo newest first: staged changes, then committed history down to version+1.
	for i := len(c.pending) - 1; i >= 0; i-- {
		if c.pending[i].GetVersion() > version {
			undoChange(target, c.pending[i])
		}
	}
	for v := c.version; v > version; v-- {
		ch, err := readChange(st, v)
		if err != nil {
			return Update{}, err
		}
		if ch == nil {
			return Update{}, errorf(ErrNotFound, "version %d has been trimmed", version)
		}
		undoChange(target, ch)
	}
	now := c.viewAll()
	ch := &minimonv1.ConfigChange{}
	for _, k := range sortedKeys(now) {
		if tv, ok := target[k]; !ok || tv != now[k] {
			ch.Removed = append(ch.Removed, k.entry(now[k]))
		}
	}
	for _, k := range sortedKeys(target) {
		if nv, ok := now[k]; !ok || nv != target[k] {
			ch.Set = append(ch.Set, k.entry(target[k]))
		}
	}
	if len(ch.Set) == 0 && len(ch.Removed) == 0 {
		return Update{Message: fmt.Sprintf("config already as at version %d, nothing changed", version)}, nil
	}
	return c.stage(ch, fmt.Sprintf("reset to version %d", version))
}

// stage numbers ch, builds its ops and records it as pending.
func (c *Config) stage(ch *minimonv1.ConfigChange, msg string) (Update, error) {
	v := c.Version() + 1
	ch.Version = v
	if c.Now != nil {
		ch.Timestamp = c.Now().UTC().Format(time.RFC3339)
	}
	rec, err := proto.MarshalOptions{Deterministic: true}.Marshal(ch)
	if err != nil {
		return Update{}, fmt.Errorf("services: encode config change: %w", err)
	}
	var ops []*minimonv1.StoreOp
	for _, e := range ch.GetRemoved() {
		ops = append(ops, erase(kvstore.BucketConfig, keyOf(e).storeKey()))
	}
	for _, e := range ch.GetSet() {
		ops = append(ops, put(kvstore.BucketConfig, keyOf(e).storeKey(), []byte(e.GetValue())))
	}
	ops = append(ops,
		put(kvstore.BucketConfig, historyKey(v), rec),
		put(kvstore.BucketConfig, []byte(configKeyVersion), kvstore.U64Key(v)))
	if v > uint64(c.keep) {
		// Everything below v-keep+1 goes; the range starts at the prefix so a smaller keep
		// than before trims the older records too.
		ops = append(ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: kvstore.BucketConfig,
			Key: []byte(configHistoryPrefix), End: historyKey(v - uint64(c.keep) + 1)})
	}
	c.pending = append(c.pending, ch)
	return Update{Ops: ops, Message: msg}, nil
}

func historyKey(v uint64) []byte {
	return append([]byte(configHistoryPrefix), kvstore.U64Key(v)...)
}

func sortedKeys(m map[configKey]string) []configKey {
	ks := make([]configKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, compareKeys)
	return ks
}

// sectionOrder sorts sections as Ceph's dump does: global, then per type (mon, mgr, osd, mds,
// client) the type section and then its ids.
func sectionOrder(s string) int {
	if s == configSectionGlobal {
		return -1
	}
	typ, _, _ := strings.Cut(s, ".")
	return slices.Index(configTypes, typ)
}

func compareKeys(a, b configKey) int {
	if d := sectionOrder(a.section) - sectionOrder(b.section); d != 0 {
		return d
	}
	if d := strings.Compare(a.section, b.section); d != 0 {
		return d
	}
	if d := strings.Compare(a.mask, b.mask); d != 0 {
		return d
	}
	return strings.Compare(a.name, b.name)
}

func readConfigVersion(st kvstore.Store) (uint64, error) {
	b, err := st.Get(kvstore.BucketConfig, []byte(configKeyVersion))
	if err != nil || b == nil {
		return 0, err
	}
	v, err := kvstore.ParseU64Key(b)
	if err != nil {
		return 0, fmt.Errorf("services: config %s: %w", configKeyVersion, err)
	}
	return v, nil
}

func readEntries(st kvstore.Store) (map[configKey]string, error) {
	m := map[configKey]string{}
	pfx := []byte(configEntryPrefix)
	err := st.ForEach(kvstore.BucketConfig, pfx, func(k, v []byte) error {
		if !bytes.HasPrefix(k, pfx) {
			return errStop
		}
		if ck, ok := parseConfigKey(k); ok {
			m[ck] = string(v)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return m, nil
}

// readChange returns the record of version v, nil when it is not (or no longer) stored.
func readChange(st kvstore.Store, v uint64) (*minimonv1.ConfigChange, error) {
	b, err := st.Get(kvstore.BucketConfig, historyKey(v))
	if err != nil || b == nil {
		return nil, err
	}
	ch := &minimonv1.ConfigChange{}
	if err := proto.Unmarshal(b, ch); err != nil {
		return nil, fmt.Errorf("services: config history %d: %w", v, err)
	}
	return ch, nil
}

// Dump returns every committed entry, sorted by section (global, then each type and its ids),
// mask and name.
func (c *Config) Dump(st kvstore.Store) ([]*minimonv1.ConfigEntry, error) {
	m, err := readEntries(st)
	if err != nil {
		return nil, err
	}
	out := make([]*minimonv1.ConfigEntry, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, k.entry(m[k]))
	}
	return out, nil
}

// Get resolves the committed config for the entity who (a section, without masks) on host
// and device class: the winning entry of option name (ErrNotFound when none applies), or of
// every option when name is empty, by name.
//
// Precedence (design.md 5): the most specific section that has a matching entry wins (global
// < type < type.id); within it, a masked entry that matches beats an unmasked one, two masks
// beat one, and host beats class. Entries whose masks do not match are ignored.
func (c *Config) Get(st kvstore.Store, who, name, host, class string) ([]*minimonv1.ConfigEntry, error) {
	w, err := ParseWho(who)
	if err != nil {
		return nil, err
	}
	if w.Mask() != "" {
		return nil, errorf(ErrInvalid, "config get takes an entity without masks (use --host and --class)")
	}
	if name != "" {
		if err := ValidateConfigName(name); err != nil {
			return nil, err
		}
	}
	m, err := readEntries(st)
	if err != nil {
		return nil, err
	}
	sections := []string{configSectionGlobal}
	if w.Type != "" {
		sections = append(sections, w.Type)
		if w.Section != w.Type {
			sections = append(sections, w.Section)
		}
	}
	type cand struct {
		k     configKey
		level int // section index
		score int
	}
	best := map[string]cand{}
	for k := range m {
		if name != "" && k.name != name {
			continue
		}
		level := slices.Index(sections, k.section)
		if level < 0 {
			continue
		}
		score, ok := maskScore(k.mask, host, class)
		if !ok {
			continue
		}
		b, seen := best[k.name]
		if !seen || level > b.level || level == b.level && score > b.score {
			best[k.name] = cand{k: k, level: level, score: score}
		}
	}
	if name != "" && len(best) == 0 {
		return nil, errorf(ErrNotFound, "option %s is not set for %s", name, w.Section)
	}
	names := make([]string, 0, len(best))
	for n := range best {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*minimonv1.ConfigEntry, 0, len(names))
	for _, n := range names {
		k := best[n].k
		out = append(out, k.entry(m[k]))
	}
	return out, nil
}

// maskScore says whether a stored mask matches the entity and how precise it is: 0 unmasked,
// 2 class, 3 host (a host is a narrower place than a device class), 5 both.
func maskScore(mask, host, class string) (int, bool) {
	if mask == "" {
		return 0, true
	}
	score := 0
	for _, p := range strings.Split(mask, "/") {
		switch {
		case strings.HasPrefix(p, configMaskHostPrefix):
			if p[len(configMaskHostPrefix):] != host {
				return 0, false
			}
			score += 3
		case strings.HasPrefix(p, configMaskClassPfx):
			if p[len(configMaskClassPfx):] != class {
				return 0, false
			}
			score += 2
		default:
			return 0, false // not written by this code: never applies
		}
	}
	return score, true
}

// Log returns the n newest committed changes (n 0: all retained), newest first (Ceph's
// `config log` order).
func (c *Config) Log(st kvstore.Store, n int) ([]*minimonv1.ConfigChange, error) {
	var all []*minimonv1.ConfigChange
	pfx := []byte(configHistoryPrefix)
	err := st.ForEach(kvstore.BucketConfig, pfx, func(k, v []byte) error {
		if !bytes.HasPrefix(k, pfx) {
			return errStop
		}
		ch := &minimonv1.ConfigChange{}
		if err := proto.Unmarshal(v, ch); err != nil {
			return fmt.Errorf("services: config history %x: %w", k, err)
		}
		all = append(all, ch)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	slices.Reverse(all)
	if n > 0 && len(all) > n {
		all = all[:n]
	}
	return all, nil
}
