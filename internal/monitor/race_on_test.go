//go:build race

package monitor

// raceEnabled: the race detector slows the monitors several times over; load tests scale down
// so the loops keep their leases on a shared 2-core machine.
const raceEnabled = true
