package paxos

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultConfig returns the LAN defaults of design.md 4a (mon_lease 0.5 s, renew factor 0.2,
// ack-timeout factor 1.2, accept factor 2.0, mon_clock_rate_error 0.01) and Ceph's trimming
// defaults. The caller sets Rank, Members, Incarnation and EndsEpoch.
func DefaultConfig() Config {
	const lease = 500 * time.Millisecond
	return Config{
		Lease:           lease,
		RenewInterval:   lease / 5,       // mon_lease_renew_interval_factor 0.2
		LeaseAckTimeout: lease * 12 / 10, // mon_lease_ack_timeout_factor 1.2
		AcceptTimeout:   lease * 2,       // mon_accept_timeout_factor 2.0
		ClockRateError:  0.01,
		PaxosMin:        500,
		PaxosTrimMin:    250,
		PaxosTrimMax:    500,
		MaxJoinDrift:    10,
	}
}

// Validate checks the options and the timing inequalities of design.md 4a that concern paxos.
// Safety never depends on them (a lease can only come out too short); they keep the cluster
// live: a renewal can be missed without losing the lease, a dead leader is replaced without a
// new-epoch wait, and pre-vote support is possible.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Members) == 0 {
		bad("paxos: Members is empty")
	} else if !slices.Contains(c.Members, c.Rank) {
		bad("paxos: Members %v does not contain Rank %d", c.Members, c.Rank)
	}
	seen := map[int32]bool{}
	for _, m := range c.Members {
		if seen[m] {
			bad("paxos: rank %d appears twice in Members", m)
		}
		seen[m] = true
	}
	if c.Incarnation == 0 {
		bad("paxos: Incarnation must be a random non-zero number drawn at process start")
	}
	e := c.ClockRateError
	rho := 1 + e
	d, r, lt := c.Lease.Seconds(), c.RenewInterval.Seconds(), c.LeaseAckTimeout.Seconds()
	if !(e > 0 && e <= 0.05) {
		bad("paxos: mon_clock_rate_error %v must be in (0, 0.05]", e)
	}
	if c.Lease <= 0 || c.RenewInterval <= 0 || c.LeaseAckTimeout <= 0 || c.AcceptTimeout <= 0 {
		bad("paxos: mon_lease, renew interval, lease ack timeout and accept timeout must be positive")
	}
	if c.RenewInterval >= c.Lease {
		bad("paxos: renew interval %v must be below mon_lease %v (renew factor < 1)", c.RenewInterval, c.Lease)
	}
	if !(r*(3*rho+1) < d) {
		bad("paxos: renew interval %v too long for mon_lease %v: need r*(3*(1+e)+1) < d", c.RenewInterval, c.Lease)
	}
	if !(lt > d*rho) {
		bad("paxos: lease ack timeout %v must exceed mon_lease*(1+e) = %.3fs", c.LeaseAckTimeout, d*rho)
	}
	if !(lt-r > r) {
		bad("paxos: lease ack timeout %v minus renew interval %v must exceed the renew interval", c.LeaseAckTimeout, c.RenewInterval)
	}
	if c.AcceptTimeout < 2*c.Lease {
		bad("paxos: accept timeout %v must be at least 2*mon_lease = %v", c.AcceptTimeout, 2*c.Lease)
	}
	if c.PaxosMin < 1 {
		bad("paxos: paxos_min must be at least 1")
	}
	if c.PaxosTrimMax < 1 {
		bad("paxos: paxos_trim_max must be at least 1")
	}
	return errors.Join(errs...)
}

func (c *Config) majority() int { return len(c.Members)/2 + 1 }

func (c *Config) isMember(r int32) bool { return slices.Contains(c.Members, r) }
