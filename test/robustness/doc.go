// Package robustness runs real monitord processes under faults injected on a schedule drawn
// from a seeded RNG (kill -9, restart, SIGSTOP/SIGCONT, network partitions), with concurrent
// client load recorded for porcupine, and checks linearizability, durability of acknowledged
// writes, store agreement, recovery and the election properties of design.md section 4.
//
// Partitions are real: every monitor listens on its own loopback address (127.77.X.11, .12,
// ...; Linux routes the whole 127/8 to lo) and dials its peers from it, so a link is an
// (saddr, daddr) pair that an nftables rule in a table of our own (inet
// minimon_faults_<pid>) drops in both directions. Clients connect from 127.0.0.1, which no
// rule matches. The table is deleted in cleanup, and tables of dead test processes are
// deleted at start. nft needs root (CAP_NET_ADMIN): without it the tests skip with one line,
// except under CI (CI set) or MINIMON_FAULTS_REQUIRED=1, where they fail instead. A root run
// without nft installs it with apt-get.
//
// Replay a run with SEED=<seed> make test-faults; FAULTS_LONG=1 draws the long schedule.
package robustness
