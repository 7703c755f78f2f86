package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/minimon/minimon/client"
)

// Issue 4 features end to end: member map changes, central config, write dedup across a
// leader crash, watches surviving a monitor kill, health checks, bench and completion. One
// 3-monitor cluster serves the steps of TestServices in order (each step leaves it with the
// three founding members in quorum, until the watch step kills one for the health step).

// mustMonctl runs monctl against every member and fails unless it exits with want.
func (tc *testCluster) mustMonctl(want int, args ...string) (stdout, stderr string) {
	tc.t.Helper()
	code, out, errOut := tc.monctl(args...)
	if code != want {
		tc.t.Fatalf("monctl %q: exit %d, want %d (stdout %q, stderr %q)", args, code, want, out, errOut)
	}
	return out, errOut
}

// waitExit waits until p's process has been reaped.
func (tc *testCluster) waitExit(p *Proc) {
	tc.t.Helper()
	ctx := tc.ctx()
	for p.Running() {
		if ctx.Err() != nil {
			tc.t.Fatalf("mon.%s still running", p.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServices drives one cluster started with --mon-data-avail-warn 100 (so MON_DISK_LOW is
// always raised: no disk has more than 100% free) through every issue 4 feature but dedup.
func TestServices(t *testing.T) {
	tc := newCluster(t, Options{Extra: []string{"--mon-data-avail-warn", "100"}})
	tc.start()
	step := func(name string, f func(*testing.T, *testCluster)) {
		t.Run(name, func(st *testing.T) {
			tc.t = st // helpers fail the step; the cluster's cleanup logs through t again
			defer func() { tc.t = t }()
			f(st, tc)
		})
	}
	step("MemberMap", testMemberMap)
	step("Config", testConfig)
	step("BenchCompletion", testBenchCompletion)
	// The watch step kills the monitor it is attached to; the health step expects it down.
	step("WatchSurvivesKill", testWatchSurvivesKill)
	step("Health", testHealth)
}

// testMemberMap: `mon add` then a --join start makes 4 members in one quorum; add is
// idempotent for the same name and address and refuses a used address (EEXIST); `mon remove`
// makes the removed monitor exit 0 and is idempotent.
func testMemberMap(t *testing.T, tc *testCluster) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	dAddr := addrs[0]
	out, _ := tc.mustMonctl(0, "mon", "add", "d", dAddr)
	if want := fmt.Sprintf("adding mon.d at %s\n", dAddr); out != want {
		t.Errorf("mon add d: stdout %q, want %q", out, want)
	}
	d := tc.soloProc("d", dAddr, filepath.Join(tc.Dir, "d"), "--join", tc.MonHost(), "--mon-data-avail-warn", "100")
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(tc.Procs), d)
	tc.waitQuorum(all...)

	a, b, c := tc.Procs[0], tc.Procs[1], tc.Procs[2]
	// `mon stat` answers from the quorum: retry while d's admission election settles.
	re := regexp.MustCompile(`^e2: 4 mons at \{` + regexp.QuoteMeta(fmt.Sprintf("a=%s,b=%s,c=%s,d=%s", a.Addr, b.Addr, c.Addr, dAddr)) +
		`\}, election epoch (\d+), leader ([0-3]) ([a-d]), quorum 0,1,2,3 a,b,c,d\n$`)
	out, _ = tc.mustMonctl(0, "mon", "stat")
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("mon stat with d: %q does not match %s", out, re)
	}
	if rank, _ := strconv.Atoi(m[2]); "abcd"[rank:rank+1] != m[3] {
		t.Errorf("mon stat: leader rank %s is not mon.%s", m[2], m[3])
	}
	if ep, _ := strconv.Atoi(m[1]); ep%2 != 0 {
		t.Errorf("mon stat: election epoch %d of a stable quorum is odd", ep)
	}

	out, _ = tc.mustMonctl(0, "-f", "json", "mon", "dump", "--epoch", "1")
	var mm struct {
		Epoch uint64 `json:"epoch"`
		FSID  string `json:"fsid"`
		Mons  []struct {
			Rank int32  `json:"rank"`
			Name string `json:"name"`
			Addr string `json:"addr"`
		} `json:"mons"`
	}
	if err := json.Unmarshal([]byte(out), &mm); err != nil {
		t.Fatalf("mon dump --epoch 1: %q: %v", out, err)
	}
	if mm.Epoch != 1 || mm.FSID == "" || len(mm.Mons) != 3 {
		t.Fatalf("mon dump --epoch 1: %s", out)
	}
	for i, p := range tc.Procs {
		if mi := mm.Mons[i]; mi.Rank != int32(i) || mi.Name != p.Name || mi.Addr != p.Addr {
			t.Errorf("founding map member %d: %+v, want rank %d mon.%s at %s", i, mi, i, p.Name, p.Addr)
		}
	}

	out, _ = tc.mustMonctl(0, "mon", "add", "d", dAddr)
	if !strings.Contains(out, "already exists") {
		t.Errorf("mon add d again: stdout %q, want it to say it already exists", out)
	}
	_, errOut := tc.mustMonctl(17, "mon", "add", "x", b.Addr)
	if !strings.Contains(errOut, "already in use by mon.b") {
		t.Errorf("mon add x with mon.b's address: stderr %q", errOut)
	}

	out, _ = tc.mustMonctl(0, "mon", "remove", "d")
	if want := fmt.Sprintf("removing mon.d at %s, there will be 3 monitors\n", dAddr); out != want {
		t.Errorf("mon remove d: stdout %q", out)
	}
	tc.waitExit(d)
	if err := d.ExitErr(); err != nil {
		t.Errorf("removed mon.d exited with %v, want status 0", err)
	}
	out, _ = tc.mustMonctl(0, "mon", "remove", "d")
	if !strings.Contains(out, "does not exist") {
		t.Errorf("mon remove d again: stdout %q, want \"does not exist\"", out)
	}
	tc.waitQuorum(tc.Procs...)
	out, _ = tc.mustMonctl(0, "mon", "stat")
	if want := fmt.Sprintf("e3: 3 mons at {a=%s,b=%s,c=%s}, ", a.Addr, b.Addr, c.Addr); !strings.HasPrefix(out, want) ||
		!strings.HasSuffix(out, ", quorum 0,1,2 a,b,c\n") {
		t.Errorf("mon stat after removing d: %q", out)
	}
}

// TestMonRemoveLast: the only member of a cluster cannot be removed (EINVAL).
func TestMonRemoveLast(t *testing.T) {
	tc := newCluster(t, Options{N: 1})
	tc.start()
	_, errOut := tc.mustMonctl(22, "mon", "remove", "a")
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "monctl: ") {
		t.Errorf("mon remove of the last member: stderr %q, want one line", errOut)
	}
	st, err := tc.cl.MonStat(tc.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if st.GetMonmap().GetEpoch() != 1 || len(st.GetMonmap().GetMons()) != 1 {
		t.Errorf("map changed by a refused remove: %v", st.GetMonmap())
	}
}

// configDumpEntry is one entry of `config dump -f json`.
type configDumpEntry struct {
	Section string `json:"section"`
	Mask    string `json:"mask"`
	Name    string `json:"name"`
	Value   string `json:"value"`
}

// configDump reads `config dump -f json`, checking every entry has exactly the four fields.
func (tc *testCluster) configDump() []configDumpEntry {
	tc.t.Helper()
	out, _ := tc.mustMonctl(0, "-f", "json", "config", "dump")
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		tc.t.Fatalf("config dump json %q: %v", out, err)
	}
	for _, e := range raw {
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range e {
				if !yield(k) {
					return
				}
			}
		})
		if !slices.Equal(keys, []string{"mask", "name", "section", "value"}) {
			tc.t.Errorf("config dump entry %v: fields %v, want mask name section value", e, keys)
		}
	}
	var entries []configDumpEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		tc.t.Fatal(err)
	}
	return entries
}

// testConfig: sections and masks resolve as design.md 5 says; dump, log, rm; bad input exit
// codes; reset to a trimmed version (ENOENT) and to a kept one (the map restored).
func testConfig(t *testing.T, tc *testCluster) {
	for _, set := range [][]string{
		{"osd.3", "debug_ms", "1"}, {"osd", "debug_ms", "2"}, {"global", "debug_ms", "3"}, {"osd/host:h1", "debug_ms", "4"},
	} {
		out, _ := tc.mustMonctl(0, append([]string{"config", "set"}, set...)...)
		if want := "set " + set[0] + " " + set[1] + "\n"; out != want {
			t.Errorf("config set %v: stdout %q, want %q", set, out, want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"osd.3", "debug_ms"}, "1"},
		{[]string{"osd.4", "debug_ms", "--host", "h1"}, "4"},
		{[]string{"osd.4", "debug_ms"}, "2"},
		{[]string{"osd.3", "debug_ms", "--host", "h1"}, "1"}, // osd.3 is more specific than osd/host:h1
		{[]string{"mon.a", "debug_ms"}, "3"},
	} {
		out, _ := tc.mustMonctl(0, append([]string{"config", "get"}, c.args...)...)
		if out != c.want {
			t.Errorf("config get %v = %q, want %q", c.args, out, c.want)
		}
	}
	tc.mustMonctl(2, "config", "get", "osd.3", "no_such_option")

	want := []configDumpEntry{
		{"global", "", "debug_ms", "3"}, {"osd", "", "debug_ms", "2"},
		{"osd", "host:h1", "debug_ms", "4"}, {"osd.3", "", "debug_ms", "1"},
	}
	sortDump := func(es []configDumpEntry) []configDumpEntry {
		slices.SortFunc(es, func(a, b configDumpEntry) int {
			return strings.Compare(a.Section+"/"+a.Mask+"/"+a.Name, b.Section+"/"+b.Mask+"/"+b.Name)
		})
		return es
	}
	if got := sortDump(tc.configDump()); !slices.Equal(got, sortDump(want)) {
		t.Errorf("config dump: %+v, want %+v", got, want)
	}

	out, _ := tc.mustMonctl(0, "config", "log", "2")
	var heads []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "--- ") {
			heads = append(heads, l)
		}
	}
	if len(heads) != 2 || !strings.Contains(out, "+ osd/host:h1/debug_ms = 4") || !strings.Contains(out, "+ global/debug_ms = 3") ||
		strings.Contains(out, "osd.3") || strings.Index(out, "host:h1") > strings.Index(out, "global") {
		t.Errorf("config log 2 (newest first, the last two changes):\n%s", out)
	}

	out, _ = tc.mustMonctl(0, "config", "rm", "osd.3", "debug_ms")
	if !strings.HasPrefix(out, "rm osd.3 debug_ms") && !strings.Contains(out, "osd.3") {
		t.Errorf("config rm: stdout %q", out)
	}
	if out, _ := tc.mustMonctl(0, "config", "get", "osd.3", "debug_ms"); out != "2" {
		t.Errorf("config get osd.3 debug_ms after rm = %q, want 2 (from osd)", out)
	}
	tc.mustMonctl(0, "config", "rm", "osd.3", "debug_ms") // absent: still success

	tc.mustMonctl(22, "config", "set", "foo.1", "x", "1")
	tc.mustMonctl(22, "config", "set", "osd", "BAD-NAME", "1")
	tc.mustMonctl(27, "config", "set", "osd", "big", strings.Repeat("v", 70<<10))

	// History: mon_config_history_keep is 100 (no flag), so 105 more changes trim every change
	// up to this point; resetting to a version whose later changes are trimmed is ENOENT.
	early := tc.configVersion()
	ctx := tc.ctx()
	for i := range 105 {
		if _, err := tc.cl.ConfigSet(ctx, "mgr", "hist_opt", strconv.Itoa(i)); err != nil {
			t.Fatalf("config set #%d: %v", i, err)
		}
	}
	_, errOut := tc.mustMonctl(2, "config", "reset", strconv.FormatUint(early, 10))
	if !strings.HasPrefix(errOut, "monctl: ") {
		t.Errorf("config reset to a trimmed version: stderr %q", errOut)
	}
	kept := tc.configVersion()
	before := sortDump(tc.configDump())
	tc.mustMonctl(0, "config", "set", "client", "debug_ms", "9")
	tc.mustMonctl(0, "config", "rm", "global", "debug_ms")
	tc.mustMonctl(0, "config", "set", "mgr", "hist_opt", "changed")
	if got := sortDump(tc.configDump()); slices.Equal(got, before) {
		t.Fatal("three changes left the dump unchanged")
	}
	out, _ = tc.mustMonctl(0, "config", "reset", strconv.FormatUint(kept, 10))
	if !strings.Contains(out, strconv.FormatUint(kept, 10)) {
		t.Errorf("config reset %d: stdout %q", kept, out)
	}
	if got := sortDump(tc.configDump()); !slices.Equal(got, before) {
		t.Errorf("config after reset %d: %+v, want %+v", kept, got, before)
	}
	if v := tc.configVersion(); v != kept+4 {
		t.Errorf("config version after 3 changes and a reset from %d: %d, want %d (a reset is one new change)", kept, v, kept+4)
	}
}

// configVersion is the newest config change (`config log 1 -f json`).
func (tc *testCluster) configVersion() uint64 {
	tc.t.Helper()
	out, _ := tc.mustMonctl(0, "-f", "json", "config", "log", "1")
	var log []struct {
		Version uint64 `json:"version"`
	}
	if err := json.Unmarshal([]byte(out), &log); err != nil || len(log) != 1 || log[0].Version == 0 {
		tc.t.Fatalf("config log 1: %q: %v", out, err)
	}
	return log[0].Version
}

// testBenchCompletion: `bench write` reports a positive op count and every field; completion
// prints a shell script.
func testBenchCompletion(t *testing.T, tc *testCluster) {
	out, _ := tc.mustMonctl(0, "-f", "json", "--timeout", "30s", "bench", "write", "--clients", "4", "--duration", "2s")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench json %q: %v", out, err)
	}
	for _, f := range []string{"op", "ops", "ops_per_sec", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "clients", "duration_s", "value_size", "keys"} {
		if _, ok := r[f]; !ok {
			t.Errorf("bench json has no %q: %s", f, out)
		}
	}
	if ops, _ := r["ops"].(float64); ops <= 0 || r["op"] != "write" || r["clients"] != float64(4) {
		t.Errorf("bench write: %s", out)
	}
	if e, _ := r["errors"].(float64); e != 0 {
		t.Errorf("bench write on a healthy cluster had errors: %s", out)
	}
	code, out, errOut, err := Monctl(tc.ctx(), bins, "completion", "bash")
	if err != nil || code != 0 || !strings.Contains(out, "complete ") || !strings.Contains(out, "monctl") {
		t.Errorf("completion bash: exit %d, err %v, stderr %q, stdout starts %q", code, err, errOut, out[:min(len(out), 80)])
	}
}

// watchLine is one `monctl -f json watch config-key` event.
type watchLine struct {
	Version  uint64 `json:"version"`
	Snapshot bool   `json:"snapshot"`
	KV       []struct {
		Key     string `json:"key"`
		Value   []byte `json:"value"`
		Deleted bool   `json:"deleted"`
	} `json:"kv"`
}

// testWatchSurvivesKill: a `monctl watch` child prints the snapshot, then every change once in
// version order, across a kill -9 of the monitor it is attached to.
func testWatchSurvivesKill(t *testing.T, tc *testCluster) {
	if runtime.GOOS != "linux" {
		t.Skip("finding the watch's monitor reads /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Monctl, "-m", tc.MonHost(), "-f", "json", "watch", "config-key", "wp/")
	cmd.Env = cleanEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.CreateTemp(tc.Dir, "watch-stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	next := func() watchLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				b, _ := os.ReadFile(stderr.Name())
				t.Fatalf("watch ended early; stderr %q", b)
			}
			var w watchLine
			if err := json.Unmarshal([]byte(l), &w); err != nil {
				t.Fatalf("watch line %q: %v", l, err)
			}
			return w
		case <-ctx.Done():
			t.Fatal("watch printed nothing in time")
		}
		panic("unreachable")
	}

	snap := next()
	if !snap.Snapshot || len(snap.KV) != 0 {
		t.Fatalf("first watch line: %+v, want an empty snapshot", snap)
	}
	victim, err := attachedMonitor(cmd.Process.Pid, tc.Procs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("watch attached to mon.%s", victim.Name)

	var versions []uint64
	write := func(i int) {
		t.Helper()
		r, err := tc.cl.KVSet(ctx, fmt.Sprintf("wp/%d", i), []byte(fmt.Sprintf("v%d", i)))
		if err != nil {
			t.Fatalf("set wp/%d: %v", i, err)
		}
		versions = append(versions, r.GetVersion())
	}
	var got []watchLine
	for i := 1; i <= 3; i++ {
		write(i)
	}
	// Read the three changes before the kill, so the ones after it come from another monitor.
	for range 3 {
		got = append(got, next())
	}
	tc.kill(victim)
	tc.waitQuorum(tc.others(victim)...)
	for i := 4; i <= 5; i++ {
		write(i)
	}
	for range 2 {
		got = append(got, next())
	}
	// Hunting may leave a connection to a monitor that answered "no quorum" besides the one
	// serving the watch: only log where it is now.
	t.Logf("after the kill the watch is connected to %v", connectedMonitors(cmd.Process.Pid, tc.others(victim)))
	// Nothing more: no repeat of a change after the reattach.
	if _, err := tc.cl.KVSet(ctx, "other/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(os.Interrupt)
	stopped = true
	werr := cmd.Wait()
	for l := range lines {
		var w watchLine
		_ = json.Unmarshal([]byte(l), &w)
		got = append(got, w)
	}
	if werr != nil {
		b, _ := os.ReadFile(stderr.Name())
		t.Errorf("watch after SIGINT: %v, stderr %q", werr, b)
	}

	if len(got) != 5 {
		t.Fatalf("watch printed %d changes after the snapshot, want 5: %+v", len(got), got)
	}
	for i, w := range got {
		key := fmt.Sprintf("wp/%d", i+1)
		if w.Snapshot || w.Version != versions[i] || len(w.KV) != 1 || w.KV[0].Key != key ||
			string(w.KV[0].Value) != fmt.Sprintf("v%d", i+1) || w.KV[0].Deleted {
			t.Errorf("change %d: %+v, want set %s at version %d (write versions %v)", i+1, w, key, versions[i], versions)
		}
		if w.Version <= snap.Version {
			t.Errorf("change %d at version %d is not after the snapshot's %d", i+1, w.Version, snap.Version)
		}
	}
}

// attachedMonitor finds the one monitor among procs that process pid has an established TCP
// connection to (Linux: its socket inodes in /proc/PID/fd matched in /proc/net/tcp).
func attachedMonitor(pid int, procs []*Proc) (*Proc, error) {
	found, err := connectedTo(pid, procs)
	if err != nil {
		return nil, err
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("process %d is connected to %d of the monitors %v, want 1", pid, len(found), addrsOf(procs...))
	}
	return found[0], nil
}

// connectedMonitors names the monitors among procs that process pid is connected to.
func connectedMonitors(pid int, procs []*Proc) []string {
	found, err := connectedTo(pid, procs)
	if err != nil {
		return []string{err.Error()}
	}
	var names []string
	for _, p := range found {
		names = append(names, "mon."+p.Name)
	}
	return names
}

func connectedTo(pid int, procs []*Proc) ([]*Proc, error) {
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, err
	}
	var found []*Proc
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" || !inodes[f[9]] { // 01: ESTABLISHED
			continue
		}
		_, portHex, _ := strings.Cut(f[2], ":")
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			continue
		}
		for _, p := range procs {
			if strings.HasSuffix(p.Addr, ":"+strconv.FormatUint(port, 10)) {
				found = append(found, p)
			}
		}
	}
	return found, nil
}

// testHealth: with one monitor killed, `health detail` names it under MON_DOWN; MON_DISK_LOW is
// there because of --mon-data-avail-warn 100. Runs after the watch step killed a monitor.
func testHealth(t *testing.T, tc *testCluster) {
	var down *Proc
	for _, p := range tc.Procs {
		if !p.Running() {
			down = p
		}
	}
	if down == nil {
		down = tc.Procs[2]
		tc.kill(down)
	}
	ctx := tc.ctx()
	var out string
	for {
		var code int
		var errOut string
		code, out, errOut = tc.monctl("health", "detail")
		if code != 0 {
			t.Fatalf("health detail: exit %d, stderr %q", code, errOut)
		}
		if strings.Contains(out, "MON_DOWN") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no MON_DOWN with mon.%s down:\n%s", down.Name, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(out, "HEALTH_WARN\n") || !strings.Contains(out, "[WRN] MON_DOWN: ") ||
		!strings.Contains(out, "mon."+down.Name) || !strings.Contains(out, "[WRN] MON_DISK_LOW: ") {
		t.Errorf("health detail with mon.%s down and --mon-data-avail-warn 100:\n%s", down.Name, out)
	}
	t.Logf("health detail:\n%s", out)
}

// TestWriteDedupCrash: the leader (mon.a, the only process armed with the crash-before-reply
// failpoint) exits with status 1 after a client write is chosen and before it replies; the
// client resends the same WriteID to another monitor and gets success. Exactly once: the
// survivors' last_committed went up by exactly one version over the whole episode, that
// version is the one in the reply, and it holds the value (KV Set always proposes, so a second
// application would have committed a second version).
func TestWriteDedupCrash(t *testing.T) {
	// Only mon.a is armed, and it must lead. The lowest rank usually wins a founding election
	// but not always (election/elector.go): found a fresh cluster until it does.
	var tc *testCluster
	var a *Proc
	for attempt := 1; ; attempt++ {
		tc = newCluster(t, Options{})
		a = tc.Procs[0]
		a.Env = []string{"MINIMON_FAILPOINT=crash-before-reply"}
		leader := tc.start()
		if leader == a {
			break
		}
		if attempt == 5 {
			t.Fatalf("mon.%s led 5 founding elections in a row, want mon.a (the armed one)", leader.Name)
		}
		t.Logf("mon.%s leads, not the armed mon.a: founding another cluster", leader.Name)
		tc.KillAll()
	}
	ctx := tc.ctx()
	survivors := tc.others(a)
	// The founding member map is the first committed value; wait for it, so that the write
	// below is the only value committed after `before` (a quorum can form before it commits).
	before := tc.lastCommitted()[a.Name]
	for deadline := time.Now().Add(30 * time.Second); before == 0; before = tc.lastCommitted()[a.Name] {
		if time.Now().After(deadline) {
			t.Fatal("the founding member map was never committed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	cl, err := client.New(client.Config{Endpoints: tc.Addrs(), DialTimeout: time.Second,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const key, value = "dedup-key", "written-once-7f3a"
	r, err := cl.KVSet(ctx, key, []byte(value))
	if err != nil {
		t.Fatalf("write across the leader crash: %v", err)
	}
	tc.waitExit(a)
	if err := a.ExitErr(); err == nil || err.Error() != "exit status 1" {
		t.Errorf("armed leader exited with %v, want exit status 1", err)
	}
	if !strings.Contains(a.Log(), "failpoint fired") {
		t.Error("mon.a's log does not say the failpoint fired")
	}
	names := map[string]string{}
	for _, p := range tc.Procs {
		names[p.Addr] = "mon." + p.Name
	}
	var retries []string
	for _, e := range logs.All() {
		retries = append(retries, fmt.Sprintf("%s: %s", names[fmt.Sprint(e.ContextMap()["endpoint"])], e.Message))
	}
	if len(retries) == 0 {
		t.Fatal("the client saw no failed attempt: the write was not resent")
	}
	// Where the first attempt went is the client's random pick: straight to mon.a, or to a peon
	// that forwarded it to mon.a (the failpoint fires on both paths; the resend is the client's
	// after the first error either way).
	t.Logf("%d failed attempts before success, the first %q", len(retries), retries[0])

	tc.waitQuorum(survivors...)
	after := map[string]uint64{}
	for {
		for _, p := range survivors {
			s, err := MonStatus(ctx, tc.cl, p, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			after[p.Name] = s.GetPaxos().GetLastCommitted()
		}
		if after[survivors[0].Name] == after[survivors[1].Name] {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("survivors never agreed: %v", after)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lc := after[survivors[0].Name]; lc != before+1 || r.GetVersion() != before+1 {
		t.Errorf("last_committed %d before, %d after, reply version %d: want one version (%d) for the write",
			before, lc, r.GetVersion(), before+1)
	}
	for _, p := range survivors {
		one, err := tc.Client(p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, one, key, value)
		_ = one.Close()
	}
}
