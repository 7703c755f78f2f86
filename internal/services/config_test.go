package services

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/grpc/codes"
)

func newConfig(t *testing.T, opts ConfigOptions) (*kvstore.Mem, *Config) {
	t.Helper()
	st := kvstore.NewMem()
	c := NewConfig(opts)
	if err := c.Refresh(st); err != nil {
		t.Fatal(err)
	}
	return st, c
}

// cset stages and commits one set.
func cset(t *testing.T, st kvstore.Store, c *Config, who, name, value string) {
	t.Helper()
	commit(t, st, []Service{c}, must(t)(c.Set(who, name, value)))
}

// getOne resolves one option, "" with ok false when unset.
func getOne(t *testing.T, st kvstore.Store, c *Config, who, name, host, class string) (*minimonv1.ConfigEntry, bool) {
	t.Helper()
	es, err := c.Get(st, who, name, host, class)
	if errors.Is(err, ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("Get(%s, %s): %d entries", who, name, len(es))
	}
	return es[0], true
}

func TestParseWho(t *testing.T) {
	tests := []struct {
		in      string
		section string
		mask    string
		err     bool
	}{
		{"global", "global", "", false},
		{"osd", "osd", "", false},
		{"mon", "mon", "", false},
		{"mds", "mds", "", false},
		{"mgr", "mgr", "", false},
		{"client", "client", "", false},
		{"osd.3", "osd.3", "", false},
		{"client.rgw.x", "client.rgw.x", "", false},
		{"osd/host:a", "osd", "host:a", false},
		{"osd/class:ssd", "osd", "class:ssd", false},
		{"osd.3/class:ssd/host:node-1", "osd.3", "host:node-1/class:ssd", false}, // canonical order
		{"global/host:a/class:b", "global", "host:a/class:b", false},
		{"foo", "", "", true},
		{"", "", "", true},
		{"foo.1", "", "", true},
		{"osd.", "", "", true},
		{"osd.a b", "", "", true},
		{"osd/host:", "", "", true},
		{"osd/host:a/host:b", "", "", true},
		{"osd/rack:a", "", "", true},
		{"osd/", "", "", true},
		{"OSD", "", "", true},
		{"osd/host:a:b", "", "", true},
	}
	for _, tt := range tests {
		w, err := ParseWho(tt.in)
		if tt.err {
			if !errors.Is(err, ErrInvalid) || GRPCCode(err) != codes.InvalidArgument {
				t.Errorf("ParseWho(%q) = %+v, %v; want ErrInvalid", tt.in, w, err)
			}
			continue
		}
		if err != nil || w.Section != tt.section || w.Mask() != tt.mask {
			t.Errorf("ParseWho(%q) = %q %q, %v; want %q %q", tt.in, w.Section, w.Mask(), err, tt.section, tt.mask)
		}
	}
	_, err := ParseWho("foo")
	if want := "unknown WHO type 'foo' (global, mon, osd, mds, mgr, client or TYPE.ID)"; err == nil || err.Error() != want {
		t.Errorf("ParseWho(foo) error %v, want %q", err, want)
	}
}

func TestConfigValidation(t *testing.T) {
	_, c := newConfig(t, ConfigOptions{MaxValueSize: 10})
	tests := []struct {
		who, name, value string
		want             error
	}{
		{"foo", "x", "1", ErrInvalid},
		{"osd", "Debug", "1", ErrInvalid},
		{"osd", "debug-ms", "1", ErrInvalid},
		{"osd", "", "1", ErrInvalid},
		{"osd", strings.Repeat("a", MaxConfigNameLen+1), "1", ErrInvalid},
		{"osd", "x", strings.Repeat("v", 11), ErrTooBig},
		{"osd", "x", "\xff", ErrInvalid},
		{"osd", "x", strings.Repeat("v", 10), nil},
	}
	for _, tt := range tests {
		u, err := c.Set(tt.who, tt.name, tt.value)
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("Set(%q, %q, %d bytes) = %v, want %v", tt.who, tt.name, len(tt.value), err, tt.want)
		}
		if err != nil && len(u.Ops) != 0 {
			t.Errorf("Set(%q, %q): ops on error", tt.who, tt.name)
		}
	}
	if c.Version() != 1 {
		t.Errorf("version %d after one valid set, want 1 (failed writes stage nothing)", c.Version())
	}
	if _, err := NewConfig(ConfigOptions{}).Set("osd", "x", strings.Repeat("v", DefaultConfigMaxValueSize+1)); !errors.Is(err, ErrTooBig) {
		t.Errorf("65 KiB value: %v, want ErrTooBig", err)
	}
}

func TestConfigPrecedence(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	cset(t, st, c, "global", "debug_ms", "g")
	cset(t, st, c, "global", "only_global", "1")
	tests := []struct {
		who, host, class, want string
	}{
		{"osd.3", "", "", "g"},
		{"mon", "", "", "g"},
		{"global", "", "", "g"},
	}
	check := func(step string) {
		t.Helper()
		for _, tt := range tests {
			e, ok := getOne(t, st, c, tt.who, "debug_ms", tt.host, tt.class)
			got := ""
			if ok {
				got = e.GetValue()
			}
			if got != tt.want {
				t.Errorf("%s: get %s debug_ms (host %q class %q) = %q, want %q", step, tt.who, tt.host, tt.class, got, tt.want)
			}
		}
	}
	check("global only")

	cset(t, st, c, "osd", "debug_ms", "osd")
	tests = append(tests[:0],
		struct{ who, host, class, want string }{"osd.3", "", "", "osd"},
		struct{ who, host, class, want string }{"osd", "", "", "osd"},
		struct{ who, host, class, want string }{"mon.a", "", "", "g"})
	check("type beats global")

	cset(t, st, c, "osd.3", "debug_ms", "osd3")
	tests = append(tests[:0],
		struct{ who, host, class, want string }{"osd.3", "", "", "osd3"},
		struct{ who, host, class, want string }{"osd.4", "", "", "osd"})
	check("id beats type")

	// Masks within the osd section: apply only on a matching host/class, most precise wins.
	cset(t, st, c, "osd/host:a", "debug_ms", "osd-host-a")
	cset(t, st, c, "osd/class:ssd", "debug_ms", "osd-ssd")
	cset(t, st, c, "osd/host:a/class:ssd", "debug_ms", "osd-a-ssd")
	tests = append(tests[:0],
		struct{ who, host, class, want string }{"osd.4", "", "", "osd"},
		struct{ who, host, class, want string }{"osd.4", "b", "hdd", "osd"},
		struct{ who, host, class, want string }{"osd.4", "a", "", "osd-host-a"},
		struct{ who, host, class, want string }{"osd.4", "", "ssd", "osd-ssd"},
		struct{ who, host, class, want string }{"osd.4", "a", "hdd", "osd-host-a"},
		struct{ who, host, class, want string }{"osd.4", "b", "ssd", "osd-ssd"},
		struct{ who, host, class, want string }{"osd.4", "a", "ssd", "osd-a-ssd"},
		// A more specific section wins even over a matching masked entry of a broader one.
		struct{ who, host, class, want string }{"osd.3", "a", "ssd", "osd3"},
		struct{ who, host, class, want string }{"mon.a", "a", "ssd", "g"})
	check("masks")

	// A section whose only entry does not match the entity does not count.
	cset(t, st, c, "mon.a/host:z", "debug_ms", "mon-a-z")
	tests = append(tests[:0],
		struct{ who, host, class, want string }{"mon.a", "a", "", "g"},
		struct{ who, host, class, want string }{"mon.a", "z", "", "mon-a-z"})
	check("non-matching mask ignored")

	// Without a name: the winner of every option, by name.
	es, err := c.Get(st, "osd.4", "", "a", "ssd")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(entriesString(es))
	if want := "osd/host:a/class:ssd debug_ms=osd-a-ssd; global only_global=1"; got != want {
		t.Errorf("get osd.4 (all) = %s, want %s", got, want)
	}
	if _, err := c.Get(st, "osd.4", "nope", "", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unset option: %v, want ErrNotFound", err)
	}
	if _, err := c.Get(st, "osd/host:a", "debug_ms", "", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("get with a mask in WHO: %v, want ErrInvalid", err)
	}
}

func entriesString(es []*minimonv1.ConfigEntry) string {
	var parts []string
	for _, e := range es {
		who := e.GetSection()
		if e.GetMask() != "" {
			who += "/" + e.GetMask()
		}
		parts = append(parts, fmt.Sprintf("%s %s=%s", who, e.GetName(), e.GetValue()))
	}
	return strings.Join(parts, "; ")
}

func TestConfigSetSameValueAndRmAbsent(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	cset(t, st, c, "osd.3", "debug_ms", "1")
	u := must(t)(c.Set("osd.3", "debug_ms", "1"))
	if len(u.Ops) != 0 || u.Message == "" {
		t.Errorf("same value: %d ops, message %q; want none and a message", len(u.Ops), u.Message)
	}
	if c.Version() != 1 {
		t.Errorf("version %d after a no-op set, want 1", c.Version())
	}
	// Same value in another section or mask is a change.
	if u := must(t)(c.Set("osd.3/host:a", "debug_ms", "1")); len(u.Ops) == 0 {
		t.Error("same value under a new mask: no ops")
	}
	c.Discard()
	u = must(t)(c.Rm("osd.4", "debug_ms"))
	if len(u.Ops) != 0 || !strings.Contains(u.Message, "nothing") {
		t.Errorf("rm absent: %d ops, message %q", len(u.Ops), u.Message)
	}
	commit(t, st, []Service{c}, must(t)(c.Rm("osd.3", "debug_ms")))
	if _, ok := getOne(t, st, c, "osd.3", "debug_ms", "", ""); ok {
		t.Error("debug_ms still set after rm")
	}
	if c.Version() != 2 {
		t.Errorf("version %d, want 2", c.Version())
	}
	if _, err := c.Rm("foo", "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("rm with a bad WHO: %v", err)
	}
}

// Two writes staged before a commit build on each other: consecutive versions, the second
// sees the first (a no-op repeat, an rm of what the first set), one or two Paxos values.
func TestConfigBatchedWrites(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	u1 := must(t)(c.Set("osd", "a", "1"))
	if u := must(t)(c.Set("osd", "a", "1")); len(u.Ops) != 0 {
		t.Error("repeat of a staged set is not a no-op")
	}
	u2 := must(t)(c.Set("osd", "a", "2"))
	u3 := must(t)(c.Rm("osd", "a"))
	u4 := must(t)(c.Set("osd", "b", "x"))
	if c.Version() != 4 || c.CommittedVersion() != 0 {
		t.Fatalf("staged version %d committed %d, want 4 and 0", c.Version(), c.CommittedVersion())
	}
	commit(t, st, []Service{c}, u1, u2) // first value
	if c.Version() != 4 || c.CommittedVersion() != 2 {
		t.Fatalf("after first value: staged %d committed %d, want 4 and 2", c.Version(), c.CommittedVersion())
	}
	commit(t, st, []Service{c}, u3, u4)
	if c.Version() != 4 || c.CommittedVersion() != 4 {
		t.Fatalf("after second value: staged %d committed %d, want 4 and 4", c.Version(), c.CommittedVersion())
	}
	es, err := c.Dump(st)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := entriesString(es), "osd b=x"; got != want {
		t.Errorf("dump %q, want %q", got, want)
	}
	log, err := c.Log(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := logString(log); got != "4:+osd/b=x 3:-osd/a=2 2:+osd/a=2,-osd/a=1 1:+osd/a=1" {
		t.Errorf("log %s", got)
	}
}

func logString(chs []*minimonv1.ConfigChange) string {
	var parts []string
	for _, ch := range chs {
		var es []string
		for _, e := range ch.GetSet() {
			es = append(es, fmt.Sprintf("+%s/%s=%s", e.GetSection(), e.GetName(), e.GetValue()))
		}
		for _, e := range ch.GetRemoved() {
			es = append(es, fmt.Sprintf("-%s/%s=%s", e.GetSection(), e.GetName(), e.GetValue()))
		}
		parts = append(parts, fmt.Sprintf("%d:%s", ch.GetVersion(), strings.Join(es, ",")))
	}
	return strings.Join(parts, " ")
}

func TestConfigLogOrderAndN(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	for i := 1; i <= 5; i++ {
		cset(t, st, c, "global", "x", fmt.Sprint(i))
	}
	log, err := c.Log(st, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 2 || log[0].GetVersion() != 5 || log[1].GetVersion() != 4 {
		t.Errorf("log 2 = %s, want versions 5 then 4", logString(log))
	}
	if log, _ := c.Log(st, 0); len(log) != 5 {
		t.Errorf("log (all) has %d, want 5", len(log))
	}
}

func TestConfigReset(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	cset(t, st, c, "global", "a", "1")                     // v1
	cset(t, st, c, "osd", "b", "1")                        // v2
	cset(t, st, c, "global", "a", "2")                     // v3
	commit(t, st, []Service{c}, must(t)(c.Rm("osd", "b"))) // v4
	cset(t, st, c, "osd/host:h", "c", "1")                 // v5

	commit(t, st, []Service{c}, must(t)(c.Reset(st, 2))) // v6 = state of v2
	es, _ := c.Dump(st)
	if got, want := entriesString(es), "global a=1; osd b=1"; got != want {
		t.Errorf("after reset 2: %q, want %q", got, want)
	}
	if c.Version() != 6 {
		t.Errorf("version %d after reset, want 6 (a reset is a change)", c.Version())
	}
	// Reset again to the same state: nothing to change.
	if u := must(t)(c.Reset(st, 2)); len(u.Ops) != 0 {
		t.Errorf("reset to the current state: %d ops", len(u.Ops))
	}
	// Forward again through history, across the reset itself.
	commit(t, st, []Service{c}, must(t)(c.Reset(st, 5)))
	es, _ = c.Dump(st)
	if got, want := entriesString(es), "global a=2; osd/host:h c=1"; got != want {
		t.Errorf("after reset 5: %q, want %q", got, want)
	}
	commit(t, st, []Service{c}, must(t)(c.Reset(st, 0)))
	if es, _ = c.Dump(st); len(es) != 0 {
		t.Errorf("after reset 0: %q, want empty", entriesString(es))
	}
	if _, err := c.Reset(st, 100); !errors.Is(err, ErrInvalid) {
		t.Errorf("reset to the future: %v, want ErrInvalid", err)
	}
}

func TestConfigResetStaged(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	cset(t, st, c, "global", "a", "1") // v1 committed
	u2 := must(t)(c.Set("global", "a", "2"))
	u3 := must(t)(c.Set("global", "b", "1"))
	u4 := must(t)(c.Reset(st, 1)) // undoes staged v3 and v2
	commit(t, st, []Service{c}, u2, u3, u4)
	es, _ := c.Dump(st)
	if got, want := entriesString(es), "global a=1"; got != want {
		t.Errorf("after staged reset: %q, want %q", got, want)
	}
}

func TestConfigHistoryTrim(t *testing.T) {
	const keep = 3
	st, c := newConfig(t, ConfigOptions{HistoryKeep: keep})
	for i := 1; i <= 7; i++ {
		cset(t, st, c, "global", "x", fmt.Sprint(i))
	}
	log, err := c.Log(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := logString(log); got != "7:+global/x=7,-global/x=6 6:+global/x=6,-global/x=5 5:+global/x=5,-global/x=4" {
		t.Errorf("log after trim: %s", got)
	}
	// The oldest state still reachable is version 4 (changes 5..7 are kept).
	commit(t, st, []Service{c}, must(t)(c.Reset(st, 4)))
	if e, _ := getOne(t, st, c, "osd.1", "x", "", ""); e.GetValue() != "4" {
		t.Errorf("reset 4: x=%q, want 4", e.GetValue())
	}
	_, err = c.Reset(st, 4) // now change 5 is trimmed (keep 3: 6, 7, 8)
	if !errors.Is(err, ErrNotFound) || err.Error() != "version 4 has been trimmed" {
		t.Errorf("reset to a trimmed version: %v, want ErrNotFound 'version 4 has been trimmed'", err)
	}
	if _, err := c.Reset(st, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset 1: %v, want ErrNotFound", err)
	}
}

func TestConfigDumpOrder(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	for _, w := range []string{"client.a", "osd.3", "osd/host:b", "osd", "mon", "global/class:ssd", "global", "mds.x", "mgr"} {
		cset(t, st, c, w, "opt", "v")
	}
	es, err := c.Dump(st)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, strings.TrimSuffix(e.GetSection()+"/"+e.GetMask(), "/"))
	}
	want := "global global/class:ssd mon mgr osd osd/host:b osd.3 mds.x client.a"
	if strings.Join(got, " ") != want {
		t.Errorf("dump order %q, want %q", strings.Join(got, " "), want)
	}
}

func TestConfigRefreshDropsGapAndDiscard(t *testing.T) {
	st, c := newConfig(t, ConfigOptions{})
	// Another leader committed two changes this one never saw staged.
	other := NewConfig(ConfigOptions{})
	if err := other.Refresh(st); err != nil {
		t.Fatal(err)
	}
	commit(t, st, []Service{other}, must(t)(other.Set("global", "a", "1")), must(t)(other.Set("global", "b", "1")))
	must(t)(c.Set("global", "c", "1")) // staged at v1 by a leader that lost the race
	if err := c.Refresh(st); err != nil {
		t.Fatal(err)
	}
	if c.Version() != 2 {
		t.Errorf("version %d after refresh, want 2 (stale staged change dropped)", c.Version())
	}
	must(t)(c.Set("global", "c", "1"))
	c.Discard()
	if c.Version() != 2 {
		t.Errorf("version %d after discard, want 2", c.Version())
	}
}

func FuzzParseWho(f *testing.F) {
	for _, s := range []string{"global", "osd.3/host:a/class:ssd", "client.rgw.x", "foo", "/", "osd//", "osd/host:\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWho(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseWho(%q): %v is not ErrInvalid", s, err)
			}
			return
		}
		// A parsed WHO round-trips and stays a valid store key.
		w2, err := ParseWho(w.String())
		if err != nil || w2 != w {
			t.Fatalf("ParseWho(%q) = %+v; reparsing %q gives %+v, %v", s, w, w.String(), w2, err)
		}
		k := configKey{section: w.Section, mask: w.Mask(), name: "x"}
		if back, ok := parseConfigKey(k.storeKey()); !ok || back != k {
			t.Fatalf("store key of %+v does not parse back: %+v", k, back)
		}
	})
}
