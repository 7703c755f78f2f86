package robustness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// faultsRequired is true where the fault tests must run rather than skip (CI).
func faultsRequired() bool {
	return os.Getenv("CI") != "" || os.Getenv("MINIMON_FAULTS_REQUIRED") == "1"
}

// skipOrFail skips with one line naming what is missing, or fails where the tests must run.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if faultsRequired() {
		t.Fatalf("fault tests required here (CI or MINIMON_FAULTS_REQUIRED=1) but: %s", msg)
	}
	t.Skip(msg)
}

var (
	nftOnce sync.Once
	nftErr  error
)

// needNft makes sure nft can be used: Linux, root, and the nft binary (installed with apt-get
// when missing and root).
func needNft(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		skipOrFail(t, "skipping: fault tests need Linux (127/8 loopback addresses and nftables)")
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "skipping: fault tests need root for nft (partitions are nftables rules)")
	}
	nftOnce.Do(func() {
		if _, err := exec.LookPath("nft"); err == nil {
			nftErr = probeNft()
			return
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			nftErr = fmt.Errorf("nft is missing and apt-get is not available to install it")
			return
		}
		out, err := exec.Command("sh", "-c",
			"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables").CombinedOutput()
		if err != nil {
			nftErr = fmt.Errorf("nft is missing and apt-get install nftables failed: %v: %s", err, lastLines(out, 5))
			return
		}
		nftErr = probeNft()
	})
	if nftErr != nil {
		skipOrFail(t, "skipping: %v", nftErr)
	}
}

// probeNft creates and deletes a table, which is what every test does.
func probeNft() error {
	name := fmt.Sprintf("minimon_faults_probe_%d", os.Getpid())
	if err := nft(fmt.Sprintf("add table inet %s\ndelete table inet %s\n", name, name)); err != nil {
		return fmt.Errorf("nft cannot create a table: %v", err)
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// nft runs one nft script atomically.
func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f: %v: %s (script: %q)", err, strings.TrimSpace(out.String()), script)
	}
	return nil
}

var staleTable = regexp.MustCompile(`table inet (minimon_faults_(?:probe_)?(\d+)(?:_\d+)?)`)

// deleteStaleTables removes tables left by test processes that no longer run (a test binary
// killed by its timeout cannot clean up after itself).
func deleteStaleTables(t *testing.T) {
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Logf("nft list tables: %v: %s", err, out)
		return
	}
	for _, m := range staleTable.FindAllStringSubmatch(string(out), -1) {
		pid, _ := strconv.Atoi(m[2])
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := nft("delete table inet " + m[1] + "\n"); err != nil {
			t.Logf("deleting stale table %s: %v", m[1], err)
		} else {
			t.Logf("deleted stale nft table %s", m[1])
		}
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

var tableSeq struct {
	sync.Mutex
	n int
}

// netFaults owns one nft table whose output chain drops packets between monitor addresses.
type netFaults struct {
	table string
	mu    sync.Mutex
	cut   map[[2]string]bool // unordered pairs (sorted) currently cut
}

// newNetFaults creates the table; it is deleted in t.Cleanup whatever happens.
func newNetFaults(t *testing.T) *netFaults {
	t.Helper()
	needNft(t)
	deleteStaleTables(t)
	tableSeq.Lock()
	tableSeq.n++
	n := tableSeq.n
	tableSeq.Unlock()
	f := &netFaults{table: fmt.Sprintf("minimon_faults_%d_%d", os.Getpid(), n), cut: map[[2]string]bool{}}
	// Loopback packets pass the output hook once per direction: dropping there cuts a link.
	if err := nft(fmt.Sprintf("add table inet %s\nadd chain inet %s out { type filter hook output priority 0; policy accept; }\n",
		f.table, f.table)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.destroy)
	return f
}

func (f *netFaults) destroy() {
	if err := nft("delete table inet " + f.table + "\n"); err != nil {
		fmt.Fprintf(os.Stderr, "robustness: deleting nft table %s: %v\n", f.table, err)
	}
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Cut drops every packet between the IPs a and b, both directions.
func (f *netFaults) Cut(pairs ...[2]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sb strings.Builder
	for _, p := range pairs {
		k := pairKey(p[0], p[1])
		if f.cut[k] {
			continue
		}
		f.cut[k] = true
		fmt.Fprintf(&sb, "add rule inet %s out ip saddr %s ip daddr %s drop\n", f.table, p[0], p[1])
		fmt.Fprintf(&sb, "add rule inet %s out ip saddr %s ip daddr %s drop\n", f.table, p[1], p[0])
	}
	if sb.Len() == 0 {
		return nil
	}
	return nft(sb.String())
}

// Heal removes every cut.
func (f *netFaults) Heal() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = map[[2]string]bool{}
	return nft(fmt.Sprintf("flush chain inet %s out\n", f.table))
}

// Cuts describes the current cuts for the log.
func (f *netFaults) Cuts() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []string
	for k := range f.cut {
		s = append(s, k[0]+"<->"+k[1])
	}
	return strings.Join(s, " ")
}
