package monitor

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/minimon/minimon/internal/paxos"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Name = "a"
	c.DataDir = "/tmp/minimon-a"
	c.Addr = "127.0.0.1:6789"
	c.InitialMembers = []Member{{"a", "127.0.0.1:6789"}, {"b", "127.0.0.1:6790"}, {"c", "127.0.0.1:6791"}}
	return c
}

// newFlags builds a flag set on a fresh default config, parses args and applies env.
func newFlags(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	c := DefaultConfig()
	fs := pflag.NewFlagSet("monitord", pflag.ContinueOnError)
	c.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return &c, err
	}
	err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return &c, err
}

func TestDefaultsValidate(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	// The derived timings are the ones of design.md 4a.
	if got := c.RenewInterval(); got != 100*time.Millisecond {
		t.Errorf("renew interval %v, want 100ms", got)
	}
	if got := c.LeaseAckTimeout(); got != 600*time.Millisecond {
		t.Errorf("lease ack timeout %v, want 600ms", got)
	}
	if got := c.AcceptTimeout(); got != time.Second {
		t.Errorf("accept timeout %v, want 1s", got)
	}
}

func TestDefaultsMissingRequired(t *testing.T) {
	c := DefaultConfig()
	err := c.Validate()
	if err == nil {
		t.Fatal("a default config without name, data dir and addr validated")
	}
	for _, f := range []string{"--name", "--data-dir", "--addr"} {
		if !strings.Contains(err.Error(), f+" is required") {
			t.Errorf("error %q does not say %s is required", err, f)
		}
	}
}

func TestPaxosConfigMatchesPaxosDefaults(t *testing.T) {
	c := validConfig()
	members := []int32{0, 1, 2}
	got := c.PaxosConfig(1, members)
	want := paxos.DefaultConfig()
	want.Rank, want.Members = 1, []int32{0, 1, 2}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PaxosConfig = %+v\nwant          %+v", got, want)
	}
	members[0] = 9
	if got.Members[0] != 0 {
		t.Fatal("PaxosConfig aliases the caller's members slice")
	}
	got.Incarnation = 42
	if err := got.Validate(); err != nil {
		t.Fatalf("paxos rejects the default config: %v", err)
	}
}

func TestElectionConfigValidates(t *testing.T) {
	c := validConfig()
	ec := c.ElectionConfig(0, []int32{0, 1, 2}, 1)
	if ec.ElectionTimeout != 300*time.Millisecond || ec.LeaseAckTimeout != 600*time.Millisecond ||
		ec.RenewInterval != 100*time.Millisecond || ec.ClockRateError != 0.01 || ec.MonmapEpoch != 1 {
		t.Fatalf("ElectionConfig = %+v", ec)
	}
	if err := ec.Validate(); err != nil {
		t.Fatalf("election rejects the default config: %v", err)
	}
}

// Each inequality of design.md 4a, violated alone, is reported with the option that breaks it;
// and a config that passes yields a paxos config that passes too.
func TestTimingInequalities(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		option string // flag name the error must contain
		value  string // value the error must contain
	}{
		{"e zero", func(c *Config) { c.MonClockRateError = 0 }, "mon-clock-rate-error", "=0 "},
		{"e too big", func(c *Config) { c.MonClockRateError = 0.06 }, "mon-clock-rate-error", "0.06"},
		{"e negative", func(c *Config) { c.MonClockRateError = -0.01 }, "mon-clock-rate-error", "-0.01"},
		{"renew factor >= 1", func(c *Config) { c.MonLeaseRenewIntervalFactor = 1 }, "mon-lease-renew-interval-factor", "=1 "},
		{"renew factor zero", func(c *Config) { c.MonLeaseRenewIntervalFactor = 0 }, "mon-lease-renew-interval-factor", "=0 "},
		// r(3(1+e)+1) < d: 0.25*(3*1.01+1) = 1.0075 >= 1, while LT - r > r still holds with 1.2.
		{"missed renewal", func(c *Config) { c.MonLeaseRenewIntervalFactor = 0.25 }, "mon-lease-renew-interval-factor", "0.25"},
		{"ack factor <= 1", func(c *Config) { c.MonLeaseAckTimeoutFactor = 1 }, "mon-lease-ack-timeout-factor", "=1 "},
		// LT > d(1+e): 1.005 > 1 but below 1.01.
		{"LT within drift", func(c *Config) { c.MonLeaseAckTimeoutFactor = 1.005 }, "mon-lease-ack-timeout-factor", "1.005"},
		// LT - r > r is implied by the two above (r < d/4, LT > d); see TestPreVoteThreshold.
		{"accept factor < 2", func(c *Config) { c.MonAcceptTimeoutFactor = 1.9 }, "mon-accept-timeout-factor", "1.9"},
		{"lease zero", func(c *Config) { c.MonLease = 0 }, "mon-lease", "=0s"},
		{"election timeout zero", func(c *Config) { c.MonElectionTimeout = 0 }, "mon-election-timeout", "=0s"},
		{"probe timeout negative", func(c *Config) { c.MonProbeTimeout = -time.Second }, "mon-probe-timeout", "-1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("validated")
			}
			if !strings.Contains(err.Error(), "--"+tc.option) || !strings.Contains(err.Error(), tc.value) {
				t.Fatalf("error %q does not name --%s and %q", err, tc.option, tc.value)
			}
		})
	}
}

// LT - r > r follows from the other inequalities (r(3ρ+1) < d gives r < d/4, and LT > d), so it
// can only fail together with LT > dρ; the error must still report it with both factors.
func TestPreVoteThreshold(t *testing.T) {
	c := validConfig()
	c.MonLeaseRenewIntervalFactor = 0.2
	c.MonLeaseAckTimeoutFactor = 0.39 // LT = 0.39d < 2r = 0.4d
	err := c.Validate()
	if err == nil {
		t.Fatal("validated")
	}
	if !strings.Contains(err.Error(), "need LT - r > r") ||
		!strings.Contains(err.Error(), "--mon-lease-ack-timeout-factor=0.39 and --mon-lease-renew-interval-factor=0.2") {
		t.Fatalf("error %q does not report LT - r > r with both options", err)
	}
}

// Boundaries: values just inside each inequality validate, and paxos agrees.
func TestTimingBoundariesInside(t *testing.T) {
	for _, mutate := range []func(*Config){
		func(c *Config) { c.MonClockRateError = 0.05 },
		func(c *Config) { c.MonLeaseRenewIntervalFactor = 0.24 }, // 0.24*4.03 = 0.967 < 1
		func(c *Config) { c.MonLeaseAckTimeoutFactor = 1.011 },
		func(c *Config) { c.MonAcceptTimeoutFactor = 2 },
		func(c *Config) { c.MonLease = 5 * time.Second; c.MonElectionTimeout = 5 * time.Second },
	} {
		c := validConfig()
		mutate(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		pc := c.PaxosConfig(0, []int32{0})
		pc.Incarnation = 1
		if err := pc.Validate(); err != nil {
			t.Errorf("Validate passed but paxos rejects: %v", err)
		}
	}
}

func TestValidateNaN(t *testing.T) {
	c := validConfig()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	c.AddFlags(fs)
	if err := fs.Parse([]string{"--mon-clock-rate-error=NaN", "--mon-lease-renew-interval-factor=NaN"}); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "--mon-clock-rate-error=NaN") ||
		!strings.Contains(err.Error(), "--mon-lease-renew-interval-factor=NaN") {
		t.Fatalf("NaN options not rejected by name: %v", err)
	}
}

func TestValidateSyntax(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"bad name", func(c *Config) { c.Name = "A" }, `--name="A"`},
		{"bad addr", func(c *Config) { c.Addr = "localhost" }, `--addr="localhost"`},
		{"bad addr port", func(c *Config) { c.Addr = "localhost:0" }, `bad port "0"`},
		{"self not a member", func(c *Config) { c.Name = "d" }, `does not contain this monitor's --name="d"`},
		{"both initial and join", func(c *Config) { c.Join = []string{"10.0.0.1:6789"} }, "exclusive"},
		{"bad join", func(c *Config) { c.InitialMembers = nil; c.Join = []string{":6789"} }, `--join: address ":6789": missing host`},
		{"dup member set directly", func(c *Config) { c.InitialMembers[1].Name = "a" }, `"a" appears twice`},
		{"bad fsid", func(c *Config) { c.FSID = "nope" }, `--fsid="nope" is not a UUID`},
		{"bad log level", func(c *Config) { c.LogLevel = "loud" }, `--log-level="loud"`},
		{"bad metrics addr", func(c *Config) { c.MetricsAddr = "9090" }, `--metrics-addr="9090"`},
		{"paxos min", func(c *Config) { c.PaxosMin = 0 }, "--paxos-min=0"},
		{"trim max", func(c *Config) { c.PaxosTrimMax = 0 }, "--paxos-trim-max=0"},
		{"sync size", func(c *Config) { c.MonSyncMaxPayloadSize = MaxPeerMsgSize }, "--mon-sync-max-payload-size="},
		{"sync keys", func(c *Config) { c.MonSyncMaxPayloadKeys = 0 }, "--mon-sync-max-payload-keys=0"},
		{"config key size", func(c *Config) { c.MonConfigKeyMaxEntrySize = 0 }, "--mon-config-key-max-entry-size=0"},
		{"config history", func(c *Config) { c.MonConfigHistoryKeep = 0 }, "--mon-config-history-keep=0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Good forms that must pass.
	c := validConfig()
	c.FSID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
	c.MetricsAddr = ":9090"
	c.Addr = ":6789" // listen on every interface
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c = validConfig()
	c.InitialMembers = nil
	c.Join = []string{"10.0.0.1:6789", "[::1]:6790"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseInitialMembers(t *testing.T) {
	got, err := ParseInitialMembers("a=10.0.0.1:6789, b=10.0.0.2:6789,c_1=[::1]:6789")
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{{"a", "10.0.0.1:6789"}, {"b", "10.0.0.2:6789"}, {"c_1", "[::1]:6789"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if ms, err := ParseInitialMembers(""); err != nil || ms != nil {
		t.Fatalf("empty: %v %v", ms, err)
	}
	bad := []struct{ in, want string }{
		{"a=10.0.0.1:6789,b10.0.0.2:6789", `entry 2 "b10.0.0.2:6789": want name=host:port`},
		{"a=10.0.0.1:6789,", `entry 2 "": want name=host:port`},
		{"a=10.0.0.1:http", `bad port "http"`},
		{"a=10.0.0.1:70000", `bad port "70000"`},
		{"a=10.0.0.1", "missing port"},
		{"a=:6789", "missing host"},
		{"a=10.0.0.1:6789,a=10.0.0.2:6789", `member name "a" appears twice`},
		{"a=10.0.0.1:6789,b=10.0.0.1:6789", "members a and b have the same address 10.0.0.1:6789"},
		{"A=10.0.0.1:6789", `member name "A"`},
		{"=10.0.0.1:6789", `member name ""`},
	}
	for _, b := range bad {
		_, err := ParseInitialMembers(b.in)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: error %v, want %q", b.in, err, b.want)
		}
	}
}

func TestFlagsParse(t *testing.T) {
	c, err := newFlags(t, []string{
		"--name", "b", "--data-dir", "/d", "--addr", "10.0.0.2:6789",
		"--initial-members", "a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789",
		"--mon-lease", "2s", "--mon-lease-renew-interval-factor", "0.1", "--mon-lease-ack-timeout-factor", "1.5",
		"--mon-clock-rate-error", "0.02", "--mon-election-timeout", "1s", "--mon-accept-timeout-factor", "3",
		"--mon-probe-timeout", "1s", "--paxos-min", "7", "--paxos-trim-min", "8", "--paxos-trim-max", "9",
		"--paxos-max-join-drift", "11", "--mon-config-key-max-entry-size", "128KiB", "--mon-config-history-keep", "7",
		"--mon-sync-max-payload-size", "2MiB", "--mon-sync-max-payload-keys", "100",
		"--mon-data-avail-warn", "40", "--mon-data-avail-crit", "10", "--mon-data-size-warn", "1000",
		"--mon-slow-write", "250ms",
		"--fsid", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "--log-level", "debug", "--metrics-addr", ":9100",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Name: "b", DataDir: "/d", Addr: "10.0.0.2:6789",
		InitialMembers: []Member{{"a", "10.0.0.1:6789"}, {"b", "10.0.0.2:6789"}, {"c", "10.0.0.3:6789"}},
		FSID:           "3f2504e0-4f89-11d3-9a0c-0305e82c3301", LogLevel: "debug", MetricsAddr: ":9100",
		MonLease: 2 * time.Second, MonLeaseRenewIntervalFactor: 0.1, MonLeaseAckTimeoutFactor: 1.5,
		MonClockRateError: 0.02, MonElectionTimeout: time.Second, MonAcceptTimeoutFactor: 3,
		MonProbeTimeout: time.Second, PaxosMin: 7, PaxosTrimMin: 8, PaxosTrimMax: 9, PaxosMaxJoinDrift: 11,
		MonConfigKeyMaxEntrySize: 128 << 10, MonConfigHistoryKeep: 7, MonSyncMaxPayloadSize: 2 << 20, MonSyncMaxPayloadKeys: 100,
		MonDataAvailWarn: 40, MonDataAvailCrit: 10, MonDataSizeWarn: 1000, MonSlowWrite: 250 * time.Millisecond,
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("got  %+v\nwant %+v", *c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// --join takes a comma list.
	c, err = newFlags(t, []string{"--join", "10.0.0.1:6789,10.0.0.2:6789"}, nil)
	if err != nil || !reflect.DeepEqual(c.Join, []string{"10.0.0.1:6789", "10.0.0.2:6789"}) {
		t.Fatalf("join %v, %v", c.Join, err)
	}
	// A bad --initial-members fails at parse time with the reason.
	_, err = newFlags(t, []string{"--initial-members", "a=h:1,a=h:2"}, nil)
	if err == nil || !strings.Contains(err.Error(), `member name "a" appears twice`) {
		t.Fatalf("parse error %v", err)
	}
}

func TestEnvOverridesAndCommandLineWins(t *testing.T) {
	env := map[string]string{
		"MINIMON_NAME":                            "c",
		"MINIMON_DATA_DIR":                        "/env",
		"MINIMON_ADDR":                            "10.0.0.3:6789",
		"MINIMON_INITIAL_MEMBERS":                 "a=10.0.0.1:6789,b=10.0.0.2:6789,c=10.0.0.3:6789",
		"MINIMON_MON_LEASE":                       "1s",
		"MINIMON_MON_LEASE_RENEW_INTERVAL_FACTOR": "0.15",
		"MINIMON_MON_ELECTION_TIMEOUT":            "700ms",
		"MINIMON_PAXOS_MAX_JOIN_DRIFT":            "20",
		"MINIMON_MON_SYNC_MAX_PAYLOAD_SIZE":       "512KiB",
		"MINIMON_METRICS_ADDR":                    "", // empty counts as unset
	}
	c, err := newFlags(t, []string{"--mon-election-timeout=2s", "--data-dir", "/cli"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "c" || c.Addr != "10.0.0.3:6789" || len(c.InitialMembers) != 3 ||
		c.MonLease != time.Second || c.MonLeaseRenewIntervalFactor != 0.15 ||
		c.PaxosMaxJoinDrift != 20 || c.MonSyncMaxPayloadSize != 512<<10 {
		t.Fatalf("env not applied: %+v", *c)
	}
	if c.MonElectionTimeout != 2*time.Second || c.DataDir != "/cli" {
		t.Fatalf("command line did not win over env: election timeout %v, data dir %q", c.MonElectionTimeout, c.DataDir)
	}
	if c.MetricsAddr != "" {
		t.Fatalf("empty env var applied: %q", c.MetricsAddr)
	}
	// Untouched options keep their defaults.
	if c.MonLeaseAckTimeoutFactor != 1.2 || c.PaxosMin != 500 {
		t.Fatalf("defaults lost: %+v", *c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEnvBadValueNamesVariable(t *testing.T) {
	for _, tc := range []struct{ key, val string }{
		{"MINIMON_MON_LEASE", "fast"},
		{"MINIMON_MON_CLOCK_RATE_ERROR", "1%"},
		{"MINIMON_PAXOS_MIN", "-1"},
		{"MINIMON_INITIAL_MEMBERS", "a=h:1,b"},
		{"MINIMON_MON_CONFIG_KEY_MAX_ENTRY_SIZE", "64KB"},
	} {
		_, err := newFlags(t, nil, map[string]string{tc.key: tc.val})
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.val) {
			t.Errorf("%s=%s: error %v does not name the variable and value", tc.key, tc.val, err)
		}
	}
	// A bad env value for a flag given on the command line is never read.
	if _, err := newFlags(t, []string{"--mon-lease=1s"}, map[string]string{"MINIMON_MON_LEASE": "fast"}); err != nil {
		t.Fatalf("env read although the flag was given: %v", err)
	}
}

func TestEveryFlagHasEnv(t *testing.T) {
	c := DefaultConfig()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	c.AddFlags(fs)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if !strings.HasPrefix(f.Name, "mon-") && !strings.HasPrefix(f.Name, "paxos-") {
			return
		}
		// Every protocol option is Ceph's name with dashes.
		if strings.ContainsAny(f.Name, "_ ") {
			t.Errorf("flag %s", f.Name)
		}
	})
	if n != 27 {
		t.Fatalf("%d flags, want 27 (every setting of design.md section 1, the config history and the health options)", n)
	}
	if got := EnvName("mon-lease-ack-timeout-factor"); got != "MINIMON_MON_LEASE_ACK_TIMEOUT_FACTOR" {
		t.Fatal(got)
	}
	unknown := UnknownEnv(fs, []string{"MINIMON_MON_LEASE=1s", "MINIMON_MON_LEAS=1s", "MINIMON_VERIFY=all", "PATH=/bin"})
	if !reflect.DeepEqual(unknown, []string{"MINIMON_MON_LEAS"}) {
		t.Fatalf("UnknownEnv = %v", unknown)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "65536": 65536, "64KiB": 64 << 10, "1 MiB": 1 << 20, "1GiB": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1KB", "-1", "3GiB", "x"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestValidateHealthOptions(t *testing.T) {
	for _, f := range []func(*Config){
		func(c *Config) { c.MonDataAvailWarn = 101 },
		func(c *Config) { c.MonDataAvailCrit = -1 },
		func(c *Config) { c.MonDataSizeWarn = 0 },
		func(c *Config) { c.MonSlowWrite = 0 },
	} {
		c := testConfig("a", "/d", "127.0.0.1:6789", []Member{{"a", "127.0.0.1:6789"}})
		if err := c.Validate(); err != nil {
			t.Fatalf("valid config: %v", err)
		}
		f(&c)
		if err := c.Validate(); err == nil {
			t.Fatalf("invalid health option accepted: %+v", c)
		}
	}
}
