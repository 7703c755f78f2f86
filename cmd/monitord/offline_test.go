package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOfflineCommandErrors: the offline subcommands exit 1 with one line naming the problem,
// and touch nothing (the tools themselves are tested in internal/monitor and test/e2e).
func TestOfflineCommandErrors(t *testing.T) {
	empty := t.TempDir()
	jsonFile := filepath.Join(t.TempDir(), "mm.json")
	if err := os.WriteFile(jsonFile, []byte(`{"mons": [{"rank": 0, "name": "a", "addr": "127.0.0.1:1"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, `required flag(s) "data-dir" not set`},
		{[]string{"check", "--data-dir", empty}, "no store at " + filepath.Join(empty, "store.db")},
		{[]string{"extract-monmap", "--data-dir", empty}, "no store at"},
		{[]string{"compact", "--data-dir", empty}, "no store at"},
		{[]string{"inject-monmap", "--data-dir", empty}, "exactly one of --in FILE and --keep"},
		{[]string{"inject-monmap", "--data-dir", empty, "--keep", "a", "--in", jsonFile}, "exactly one of"},
		{[]string{"inject-monmap", "--data-dir", empty, "--keep", "a"}, "no store at"},
		{[]string{"inject-monmap", "--data-dir", empty, "--in", jsonFile}, "no store at"},
		{[]string{"inject-monmap", "--data-dir", empty, "--in", filepath.Join(empty, "none.json")}, "no such file"},
	} {
		code, out, errOut := monitord(t, nil, tc.args...)
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "monitord: ") || !strings.Contains(errOut, tc.want) ||
			strings.Count(errOut, "\n") != 1 {
			t.Errorf("monitord %q: exit %d, stdout %q, stderr %q; want exit 1 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("the tools created files in the data dir: %v", entries)
	}
}

func TestOfflineHelp(t *testing.T) {
	code, out, _ := monitord(t, nil, "inject-monmap", "--help")
	for _, want := range []string{"--keep", "--epoch-jump", "--in", "monitord inject-monmap --data-dir /var/lib/minimon/a --keep a"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("inject-monmap --help (exit %d) does not mention %q", code, want)
		}
	}
}
