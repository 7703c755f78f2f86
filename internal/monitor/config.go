package monitor

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"

	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/paxos"
)

// Member is one entry of --initial-members: a monitor name and its address.
type Member struct {
	Name string
	Addr string
}

// Config is every monitord setting (design.md section 1). The protocol options keep Ceph's names
// (ceph-mon-spec.md Appendix A) with the LAN defaults of design.md 4a. Validate() must pass
// before the daemon opens anything.
type Config struct {
	Name    string // --name: this monitor's name, [a-z0-9_-]+
	DataDir string // --data-dir: the store lives here
	Addr    string // --addr: host:port serving both peers and clients (Ceph's way)

	// InitialMembers (--initial-members a=host:port,...) is read only when the data dir is
	// empty; later starts take the member map from the store.
	InitialMembers []Member
	// Join (--join ADDR,...): monitors of an existing cluster to learn fsid and map from.
	Join []string

	FSID        string // --fsid: cluster id (UUID); empty means derived from the member list
	LogLevel    string // --log-level: zap level name
	MetricsAddr string // --metrics-addr: /metrics, /healthz, /readyz; off if empty

	MonLease                    time.Duration // mon_lease, d
	MonLeaseRenewIntervalFactor float64       // r = d * factor; must be < 1
	MonLeaseAckTimeoutFactor    float64       // LT = AT = d * factor; must be > 1
	MonClockRateError           float64       // e, pairwise clock-rate bound (new in minimon)
	MonElectionTimeout          time.Duration // mon_election_timeout, ET
	MonAcceptTimeoutFactor      float64       // collect/accept/own-write timeout = d * factor
	MonProbeTimeout             time.Duration // mon_probe_timeout

	PaxosMin          uint64 // paxos_min: versions always kept
	PaxosTrimMin      uint64 // paxos_trim_min: extra versions before trimming
	PaxosTrimMax      uint64 // paxos_trim_max: max versions trimmed per round
	PaxosMaxJoinDrift uint64 // paxos_max_join_drift: versions behind before sync

	MonConfigKeyMaxEntrySize int // bytes; cap of one config-key (and config) value
	MonConfigHistoryKeep     int // central config changes kept for `config log` and `config reset`
	MonSyncMaxPayloadSize    int // bytes per sync chunk
	MonSyncMaxPayloadKeys    int // keys per sync chunk

	// Health checks (health.go, spec 7.4).
	MonDataAvailWarn int           // mon_data_avail_warn: MON_DISK_LOW at or below this % free
	MonDataAvailCrit int           // mon_data_avail_crit: MON_DISK_CRIT (HEALTH_ERR) at or below
	MonDataSizeWarn  int64         // mon_data_size_warn: MON_DISK_BIG above this many store bytes
	MonSlowWrite     time.Duration // mon_slow_write (minimon): MON_SLOW when a store write p99 exceeds it
}

// DefaultConfig returns the defaults of design.md 4a (LAN timings) and Ceph's Appendix A for the
// rest. Name, DataDir and Addr have no default.
func DefaultConfig() Config {
	return Config{
		LogLevel: "info",

		MonLease:                    500 * time.Millisecond,
		MonLeaseRenewIntervalFactor: 0.2,
		MonLeaseAckTimeoutFactor:    1.2,
		MonClockRateError:           0.01,
		MonElectionTimeout:          300 * time.Millisecond,
		MonAcceptTimeoutFactor:      2.0,
		MonProbeTimeout:             250 * time.Millisecond,

		PaxosMin:          500,
		PaxosTrimMin:      250,
		PaxosTrimMax:      500,
		PaxosMaxJoinDrift: 10,

		MonConfigKeyMaxEntrySize: 64 << 10,
		MonConfigHistoryKeep:     100,
		MonSyncMaxPayloadSize:    1 << 20,
		MonSyncMaxPayloadKeys:    2000,

		MonDataAvailWarn: 30,
		MonDataAvailCrit: 5,
		MonDataSizeWarn:  15 << 30,
		MonSlowWrite:     time.Second,
	}
}

// Flag names. Protocol options are Ceph's option names with dashes.
const (
	FlagName                        = "name"
	FlagDataDir                     = "data-dir"
	FlagAddr                        = "addr"
	FlagInitialMembers              = "initial-members"
	FlagJoin                        = "join"
	FlagFSID                        = "fsid"
	FlagLogLevel                    = "log-level"
	FlagMetricsAddr                 = "metrics-addr"
	FlagMonLease                    = "mon-lease"
	FlagMonLeaseRenewIntervalFactor = "mon-lease-renew-interval-factor"
	FlagMonLeaseAckTimeoutFactor    = "mon-lease-ack-timeout-factor"
	FlagMonClockRateError           = "mon-clock-rate-error"
	FlagMonElectionTimeout          = "mon-election-timeout"
	FlagMonAcceptTimeoutFactor      = "mon-accept-timeout-factor"
	FlagMonProbeTimeout             = "mon-probe-timeout"
	FlagPaxosMin                    = "paxos-min"
	FlagPaxosTrimMin                = "paxos-trim-min"
	FlagPaxosTrimMax                = "paxos-trim-max"
	FlagPaxosMaxJoinDrift           = "paxos-max-join-drift"
	FlagMonConfigKeyMaxEntrySize    = "mon-config-key-max-entry-size"
	FlagMonConfigHistoryKeep        = "mon-config-history-keep"
	FlagMonSyncMaxPayloadSize       = "mon-sync-max-payload-size"
	FlagMonSyncMaxPayloadKeys       = "mon-sync-max-payload-keys"
	FlagMonDataAvailWarn            = "mon-data-avail-warn"
	FlagMonDataAvailCrit            = "mon-data-avail-crit"
	FlagMonDataSizeWarn             = "mon-data-size-warn"
	FlagMonSlowWrite                = "mon-slow-write"
)

// EnvPrefix prefixes the environment variable of every flag: --mon-lease is MINIMON_MON_LEASE.
const EnvPrefix = "MINIMON_"

// AddFlags binds every setting to fs, with c's current values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Name, FlagName, c.Name, "this monitor's name ([a-z0-9_-]+)")
	fs.StringVar(&c.DataDir, FlagDataDir, c.DataDir, "directory of this monitor's store")
	fs.StringVar(&c.Addr, FlagAddr, c.Addr, "host:port serving peers and clients")
	fs.Var(&membersValue{p: &c.InitialMembers}, FlagInitialMembers,
		"founding members name=host:port,... (read only on the first start)")
	fs.StringSliceVar(&c.Join, FlagJoin, c.Join, "addresses of an existing cluster to join (first start only)")
	fs.StringVar(&c.FSID, FlagFSID, c.FSID, "cluster id (UUID); default derived from --initial-members")
	fs.StringVar(&c.LogLevel, FlagLogLevel, c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.MetricsAddr, FlagMetricsAddr, c.MetricsAddr, "host:port for /metrics, /healthz and /readyz (off if empty)")

	fs.DurationVar(&c.MonLease, FlagMonLease, c.MonLease, "lease length d (mon_lease)")
	fs.Float64Var(&c.MonLeaseRenewIntervalFactor, FlagMonLeaseRenewIntervalFactor, c.MonLeaseRenewIntervalFactor,
		"lease renew interval as a fraction of mon_lease (< 1)")
	fs.Float64Var(&c.MonLeaseAckTimeoutFactor, FlagMonLeaseAckTimeoutFactor, c.MonLeaseAckTimeoutFactor,
		"lease-ack timeout and peon lease timeout as a multiple of mon_lease (> 1)")
	fs.Float64Var(&c.MonClockRateError, FlagMonClockRateError, c.MonClockRateError,
		"bound on the pairwise clock-rate difference e, in (0, 0.05]")
	fs.DurationVar(&c.MonElectionTimeout, FlagMonElectionTimeout, c.MonElectionTimeout, "election timeout")
	fs.Float64Var(&c.MonAcceptTimeoutFactor, FlagMonAcceptTimeoutFactor, c.MonAcceptTimeoutFactor,
		"collect/accept timeout as a multiple of mon_lease (>= 2)")
	fs.DurationVar(&c.MonProbeTimeout, FlagMonProbeTimeout, c.MonProbeTimeout, "probe retry interval")

	fs.Uint64Var(&c.PaxosMin, FlagPaxosMin, c.PaxosMin, "paxos versions always kept")
	fs.Uint64Var(&c.PaxosTrimMin, FlagPaxosTrimMin, c.PaxosTrimMin, "extra paxos versions before trimming")
	fs.Uint64Var(&c.PaxosTrimMax, FlagPaxosTrimMax, c.PaxosTrimMax, "max paxos versions trimmed per round")
	fs.Uint64Var(&c.PaxosMaxJoinDrift, FlagPaxosMaxJoinDrift, c.PaxosMaxJoinDrift, "versions behind before a full sync")

	fs.Var(&sizeValue{p: &c.MonConfigKeyMaxEntrySize}, FlagMonConfigKeyMaxEntrySize,
		"max bytes of one config-key or config value (e.g. 65536, 64KiB)")
	fs.IntVar(&c.MonConfigHistoryKeep, FlagMonConfigHistoryKeep, c.MonConfigHistoryKeep,
		"central config changes kept for `config log` and `config reset` (older ones are trimmed)")
	fs.Var(&sizeValue{p: &c.MonSyncMaxPayloadSize}, FlagMonSyncMaxPayloadSize,
		"byte budget of one sync chunk (e.g. 1MiB)")
	fs.IntVar(&c.MonSyncMaxPayloadKeys, FlagMonSyncMaxPayloadKeys, c.MonSyncMaxPayloadKeys, "key budget of one sync chunk")

	fs.IntVar(&c.MonDataAvailWarn, FlagMonDataAvailWarn, c.MonDataAvailWarn,
		"MON_DISK_LOW (HEALTH_WARN) when the data dir's free space is at or below this percentage")
	fs.IntVar(&c.MonDataAvailCrit, FlagMonDataAvailCrit, c.MonDataAvailCrit,
		"MON_DISK_CRIT (HEALTH_ERR) when the data dir's free space is at or below this percentage")
	fs.Int64Var(&c.MonDataSizeWarn, FlagMonDataSizeWarn, c.MonDataSizeWarn,
		"MON_DISK_BIG (HEALTH_WARN) when the store file exceeds this many bytes")
	fs.DurationVar(&c.MonSlowWrite, FlagMonSlowWrite, c.MonSlowWrite,
		"MON_SLOW (HEALTH_WARN) when a monitor's recent store writes have a p99 above this")
}

// EnvName is the environment variable read for a flag: MINIMON_ + upper case, dashes to
// underscores.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplyEnv sets every flag of fs not given on the command line from its MINIMON_ variable, so
// the command line wins. Call it after fs.Parse. lookup is os.LookupEnv in the daemon. As in
// etcd, an empty variable counts as unset (compose files often pass empty values).
func ApplyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		key := EnvName(f.Name)
		v, ok := lookup(key)
		if !ok || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q (--%s): %w", key, v, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// envNotFlags are MINIMON_ variables read elsewhere, not by a flag.
var envNotFlags = []string{"MINIMON_VERIFY", EnvFailpoint}

// UnknownEnv returns the MINIMON_ variables of environ (os.Environ() form) that match no flag
// of fs, so the daemon can warn about a misspelt one instead of ignoring it silently.
func UnknownEnv(fs *pflag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { known[EnvName(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) && !known[k] && !slices.Contains(envNotFlags, k) {
			out = append(out, k)
		}
	}
	return out
}

// RenewInterval is r = mon_lease * mon_lease_renew_interval_factor.
func (c *Config) RenewInterval() time.Duration {
	return scale(c.MonLease, c.MonLeaseRenewIntervalFactor)
}

// LeaseAckTimeout is LT = AT = mon_lease * mon_lease_ack_timeout_factor: the leader's lease-ack
// timeout and the peon's lease timeout are one option, as in Ceph, so AT >= LT holds by
// construction.
func (c *Config) LeaseAckTimeout() time.Duration {
	return scale(c.MonLease, c.MonLeaseAckTimeoutFactor)
}

// AcceptTimeout is mon_lease * mon_accept_timeout_factor (collect, accept and own-write timeout).
func (c *Config) AcceptTimeout() time.Duration {
	return scale(c.MonLease, c.MonAcceptTimeoutFactor)
}

// scale multiplies d by f, rounding to the nanosecond and saturating rather than overflowing
// (Validate rejects the absurd values; this keeps the arithmetic defined until then).
func scale(d time.Duration, f float64) time.Duration {
	v := math.Round(float64(d) * f)
	switch {
	case math.IsNaN(v):
		return 0
	case v >= math.MaxInt64:
		return math.MaxInt64
	case v <= math.MinInt64:
		return math.MinInt64
	}
	return time.Duration(v)
}

// PaxosConfig builds the paxos configuration from these options. The caller sets Incarnation,
// EndsEpoch and Logger.
func (c *Config) PaxosConfig(rank int32, members []int32) paxos.Config {
	return paxos.Config{
		Rank:            rank,
		Members:         slices.Clone(members),
		Lease:           c.MonLease,
		RenewInterval:   c.RenewInterval(),
		LeaseAckTimeout: c.LeaseAckTimeout(),
		AcceptTimeout:   c.AcceptTimeout(),
		ClockRateError:  c.MonClockRateError,
		PaxosMin:        c.PaxosMin,
		PaxosTrimMin:    c.PaxosTrimMin,
		PaxosTrimMax:    c.PaxosTrimMax,
		MaxJoinDrift:    c.PaxosMaxJoinDrift,
	}
}

// ElectionConfig builds the elector configuration from these options. The caller sets Rand and
// Logger.
func (c *Config) ElectionConfig(rank int32, members []int32, monmapEpoch uint64) election.Config {
	return election.Config{
		Rank:            rank,
		Members:         slices.Clone(members),
		ElectionTimeout: c.MonElectionTimeout,
		LeaseAckTimeout: c.LeaseAckTimeout(),
		RenewInterval:   c.RenewInterval(),
		ClockRateError:  c.MonClockRateError,
		MonmapEpoch:     monmapEpoch,
	}
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// Validate checks required fields, syntax, and the timing inequalities of design.md 4a. It
// reports every problem at once. Whether a first start has --initial-members or --join is the
// daemon's check (it depends on the data dir).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Name == "" {
		bad("--%s is required", FlagName)
	} else if !nameRE.MatchString(c.Name) {
		bad("--%s=%q: a monitor name is [a-z0-9_-]+", FlagName, c.Name)
	}
	if c.DataDir == "" {
		bad("--%s is required", FlagDataDir)
	}
	if c.Addr == "" {
		bad("--%s is required", FlagAddr)
	} else if err := checkAddr(c.Addr, true); err != nil {
		bad("--%s=%q: %v", FlagAddr, c.Addr, err)
	}
	if len(c.InitialMembers) > 0 {
		if err := checkMembers(c.InitialMembers); err != nil {
			bad("--%s: %v", FlagInitialMembers, err)
		}
		if c.Name != "" && !slices.ContainsFunc(c.InitialMembers, func(m Member) bool { return m.Name == c.Name }) {
			bad("--%s=%s does not contain this monitor's --%s=%q", FlagInitialMembers,
				formatMembers(c.InitialMembers), FlagName, c.Name)
		}
		if len(c.Join) > 0 {
			bad("--%s and --%s are exclusive: found a new cluster or join an existing one", FlagInitialMembers, FlagJoin)
		}
	}
	for _, a := range c.Join {
		if err := checkAddr(a, false); err != nil {
			bad("--%s: address %q: %v", FlagJoin, a, err)
		}
	}
	if c.FSID != "" && !uuidRE.MatchString(c.FSID) {
		bad("--%s=%q is not a UUID", FlagFSID, c.FSID)
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		bad("--%s=%q: %v", FlagLogLevel, c.LogLevel, err)
	}
	if c.MetricsAddr != "" {
		if err := checkAddr(c.MetricsAddr, true); err != nil {
			bad("--%s=%q: %v", FlagMetricsAddr, c.MetricsAddr, err)
		}
	}

	errs = append(errs, c.validateTiming()...)

	if c.PaxosMin < 1 {
		bad("--%s=%d must be at least 1", FlagPaxosMin, c.PaxosMin)
	}
	if c.PaxosTrimMax < 1 {
		bad("--%s=%d must be at least 1", FlagPaxosTrimMax, c.PaxosTrimMax)
	}
	if c.MonConfigKeyMaxEntrySize < 1 {
		bad("--%s=%d must be positive", FlagMonConfigKeyMaxEntrySize, c.MonConfigKeyMaxEntrySize)
	}
	if c.MonConfigHistoryKeep < 1 {
		bad("--%s=%d must be at least 1", FlagMonConfigHistoryKeep, c.MonConfigHistoryKeep)
	}
	// A chunk may overshoot its byte budget by one entry and travels in a peer envelope, which
	// the transport drops above MaxPeerMsgSize: keep the budget well under it.
	if c.MonSyncMaxPayloadSize < 1 || c.MonSyncMaxPayloadSize > MaxPeerMsgSize/2 {
		bad("--%s=%d must be in [1, %d] (half the peer message limit)", FlagMonSyncMaxPayloadSize,
			c.MonSyncMaxPayloadSize, MaxPeerMsgSize/2)
	}
	if c.MonConfigKeyMaxEntrySize > MaxPeerMsgSize/2 {
		bad("--%s=%d must be at most %d (half the peer message limit)", FlagMonConfigKeyMaxEntrySize,
			c.MonConfigKeyMaxEntrySize, MaxPeerMsgSize/2)
	}
	if c.MonSyncMaxPayloadKeys < 1 {
		bad("--%s=%d must be positive", FlagMonSyncMaxPayloadKeys, c.MonSyncMaxPayloadKeys)
	}
	if c.MonDataAvailWarn < 0 || c.MonDataAvailWarn > 100 {
		bad("--%s=%d must be a percentage in [0, 100]", FlagMonDataAvailWarn, c.MonDataAvailWarn)
	}
	if c.MonDataAvailCrit < 0 || c.MonDataAvailCrit > 100 {
		bad("--%s=%d must be a percentage in [0, 100]", FlagMonDataAvailCrit, c.MonDataAvailCrit)
	}
	if c.MonDataSizeWarn < 1 {
		bad("--%s=%d must be positive", FlagMonDataSizeWarn, c.MonDataSizeWarn)
	}
	if c.MonSlowWrite <= 0 {
		bad("--%s=%s must be positive", FlagMonSlowWrite, c.MonSlowWrite)
	}
	return errors.Join(errs...)
}

// validateTiming checks design.md 4a's start-up inequalities. Safety does not depend on them;
// liveness does. Each check is written as !(good) so NaN fails too. The arithmetic matches
// paxos.Config.Validate, so a Config that passes here yields a paxos.Config that passes there.
func (c *Config) validateTiming() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	e := c.MonClockRateError
	rho := 1 + e
	d, r, lt := c.MonLease, c.RenewInterval(), c.LeaseAckTimeout()
	ds, rs, lts := d.Seconds(), r.Seconds(), lt.Seconds()

	if !(e > 0 && e <= 0.05) {
		bad("--%s=%v must be in (0, 0.05]", FlagMonClockRateError, e)
	}
	if !(d > 0) {
		bad("--%s=%v must be positive", FlagMonLease, d)
	}
	if !(c.MonElectionTimeout > 0) {
		bad("--%s=%v must be positive", FlagMonElectionTimeout, c.MonElectionTimeout)
	}
	if !(c.MonProbeTimeout > 0) {
		bad("--%s=%v must be positive", FlagMonProbeTimeout, c.MonProbeTimeout)
	}
	if !(c.MonLeaseRenewIntervalFactor > 0 && c.MonLeaseRenewIntervalFactor < 1) {
		bad("--%s=%v must be in (0, 1)", FlagMonLeaseRenewIntervalFactor, c.MonLeaseRenewIntervalFactor)
	}
	if !(c.MonLeaseAckTimeoutFactor > 1) {
		bad("--%s=%v must be above 1", FlagMonLeaseAckTimeoutFactor, c.MonLeaseAckTimeoutFactor)
	}
	if d <= 0 {
		return errs // the inequalities below are all relative to d
	}
	// One missed renewal must not lose the lease.
	if !(rs*(3*rho+1) < ds) {
		bad("--%s=%v gives renew interval r=%v; with --%s=%v need r*(3*(1+e)+1) = %.4fs < --%s=%v",
			FlagMonLeaseRenewIntervalFactor, c.MonLeaseRenewIntervalFactor, r,
			FlagMonClockRateError, e, rs*(3*rho+1), FlagMonLease, d)
	}
	// After a leader crash the peons' leases must have run out before they probe, so the new
	// leader needs no new-epoch wait.
	if !(lts > ds*rho) {
		bad("--%s=%v gives lease timeout LT=%v; with --%s=%v need LT > mon_lease*(1+e) = %.4fs",
			FlagMonLeaseAckTimeoutFactor, c.MonLeaseAckTimeoutFactor, lt,
			FlagMonClockRateError, e, ds*rho)
	}
	// Pre-vote support needs LT - r of leader silence; it must span more than one renewal.
	if !(lts-rs > rs) {
		bad("--%s=%v and --%s=%v give LT=%v, r=%v; need LT - r > r",
			FlagMonLeaseAckTimeoutFactor, c.MonLeaseAckTimeoutFactor,
			FlagMonLeaseRenewIntervalFactor, c.MonLeaseRenewIntervalFactor, lt, r)
	}
	// AT >= LT: both are mon_lease_ack_timeout_factor (one option, as in Ceph), so it holds by
	// construction and there is nothing to check.
	if !(c.MonAcceptTimeoutFactor >= 2) {
		bad("--%s=%v gives accept timeout %v; need at least 2*mon_lease = %v",
			FlagMonAcceptTimeoutFactor, c.MonAcceptTimeoutFactor, c.AcceptTimeout(), 2*d)
	}
	return errs
}

// checkAddr checks host:port syntax. emptyHostOK allows ":6789" (listen on every interface).
func checkAddr(a string, emptyHostOK bool) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" && !emptyHostOK {
		return errors.New("missing host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// checkMembers checks names, addresses and uniqueness of both.
func checkMembers(ms []Member) error {
	names := map[string]bool{}
	addrs := map[string]string{}
	for _, m := range ms {
		if !nameRE.MatchString(m.Name) {
			return fmt.Errorf("member name %q: a monitor name is [a-z0-9_-]+", m.Name)
		}
		if err := checkAddr(m.Addr, false); err != nil {
			return fmt.Errorf("member %s address %q: %w", m.Name, m.Addr, err)
		}
		if names[m.Name] {
			return fmt.Errorf("member name %q appears twice", m.Name)
		}
		names[m.Name] = true
		key := strings.ToLower(m.Addr)
		if other, dup := addrs[key]; dup {
			return fmt.Errorf("members %s and %s have the same address %s", other, m.Name, m.Addr)
		}
		addrs[key] = m.Name
	}
	return nil
}

// ParseInitialMembers parses "a=host:port,b=host:port" and checks it (names [a-z0-9_-]+,
// host:port addresses, no duplicate name or address). An empty string gives no members.
func ParseInitialMembers(s string) ([]Member, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ms []Member
	for i, ent := range strings.Split(s, ",") {
		ent = strings.TrimSpace(ent)
		name, addr, ok := strings.Cut(ent, "=")
		if !ok {
			return nil, fmt.Errorf("entry %d %q: want name=host:port", i+1, ent)
		}
		ms = append(ms, Member{Name: strings.TrimSpace(name), Addr: strings.TrimSpace(addr)})
	}
	if err := checkMembers(ms); err != nil {
		return nil, err
	}
	return ms, nil
}

func formatMembers(ms []Member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Name + "=" + m.Addr
	}
	return strings.Join(parts, ",")
}

// membersValue is the pflag.Value of --initial-members. A later Set replaces the list.
type membersValue struct{ p *[]Member }

func (v *membersValue) String() string {
	if v.p == nil {
		return ""
	}
	return formatMembers(*v.p)
}

func (v *membersValue) Set(s string) error {
	ms, err := ParseInitialMembers(s)
	if err != nil {
		return err
	}
	*v.p = ms
	return nil
}

func (v *membersValue) Type() string { return "name=addr,..." }

// sizeValue is a byte count flag: a plain integer or one with a KiB, MiB or GiB suffix.
type sizeValue struct{ p *int }

func (v *sizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

func (v *sizeValue) Type() string { return "bytes" }

func parseSize(s string) (int, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want bytes, optionally with KiB, MiB or GiB", s)
	}
	if n < 0 || n > math.MaxInt32/mult {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return int(n * mult), nil
}
