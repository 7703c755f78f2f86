package paxos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// TestRandomFaults drives the harness with a seeded mix of proposals, ticks, reordered,
// dropped and duplicated messages, partitions, crashes with the store kept, and elections
// (release computed from the quorum's horizons as the elector does), and checks after every
// step:
//   - no two values at one version, and lc never decreases on a member;
//   - a member that is Readable holds every value acknowledged (Done with nil) before now;
//
// and at the end, after healing and a final election, that no acknowledged write is lost.
func TestRandomFaults(t *testing.T) {
	seeds := 60 // PAXOS_SEEDS overrides; set debugSeed to trace one seed
	if s := os.Getenv("PAXOS_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomRun(t, uint64(seed)) })
	}
}

var debugSeed = -1

func randomRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	n := 3
	if seed%3 == 2 {
		n = 5
	}
	c := newCluster(t, n, func(cfg *Config) {
		if debugSeed == int(seed) {
			// cfg.Logger = tlog{r: cfg.Rank}
		}
	})
	if debugSeed == int(seed) {
		for _, r := range c.members {
			c.start(r, true)
		}
	}
	var acked []string // keys whose writes were acknowledged
	ackVer := map[string]uint64{}
	ackedAt := uint64(0)
	type pid struct {
		p  *Paxos
		id ProposalID
	}
	keyOf := map[pid]string{}
	seenResults := map[int32]int{}
	lastLC := map[int32]uint64{}
	nextKey := 0
	epochLeader := int32(-1)
	readableSeen := 0
	reasons := map[string]int{}

	check := func() {
		t.Helper()
		c.checkAgreement()
		for _, r := range c.members {
			nd := c.nodes[r]
			if nd.p.lc < lastLC[r] {
				t.Fatalf("seed %d: node %d lc went from %d to %d", seed, r, lastLC[r], nd.p.lc)
			}
			lastLC[r] = nd.p.lc
			// Collect new results of this node.
			if len(nd.results) != seenResults[r] {
				seenResults[r] = len(nd.results)
				for id, res := range nd.results {
					k := pid{nd.p, id}
					if res.Err == nil && keyOf[k] != "" {
						acked = append(acked, keyOf[k])
						ackVer[keyOf[k]] = res.Version
						if debugSeed == int(seed) {
							fmt.Println("ACK", keyOf[k], res.Version, "at node", r, c.now.Sub(epoch0), c)
						}
						ackedAt = max(ackedAt, res.Version)
						keyOf[k] = ""
					}
				}
			}
		}
		for _, r := range c.members {
			nd := c.nodes[r]
			if !nd.down && nd.p.Readable(c.now) {
				readableSeen++
			}
			if !nd.down && nd.p.Readable(c.now) && nd.p.lc < ackedAt {
				t.Fatalf("seed %d: node %d readable at lc %d but version %d was acknowledged (%v)",
					seed, r, nd.p.lc, ackedAt, c)
			}
		}
	}

	elect := func() {
		var live []int32
		for _, r := range c.members {
			if !c.nodes[r].down {
				live = append(live, r)
			}
		}
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		maj := n/2 + 1
		if len(live) < maj {
			return
		}
		q := slices.Clone(live[:maj+rng.IntN(len(live)-maj+1)])
		slices.Sort(q)
		leader := q[rng.IntN(len(q))]
		release := c.now
		for _, r := range q {
			if h := c.nodes[r].p.Horizon(); h.After(release) {
				release = h
			}
		}
		c.epoch += 2
		c.leader, c.quorum = leader, q
		epochLeader = leader
		// Members in the new quorum leave their old role; members outside keep theirs (an old
		// peon may still hold a lease: rule 6 must cover it).
		for _, r := range q {
			if r != leader {
				c.nodes[r].p.Peon(c.now, c.epoch, leader, q)
			}
		}
		c.nodes[leader].p.Leader(c.now, c.epoch, q, release)
		c.processAll()
	}

	elect()
	for step := 0; step < 3000; step++ {
		switch x := rng.IntN(1000); {
		case x < 120: // propose at the current leader
			if epochLeader >= 0 && !c.nodes[epochLeader].down {
				nextKey++
				k := fmt.Sprintf("k%d", nextKey)
				if id, err := c.nodes[epochLeader].p.Propose(c.now, encodeTx(t, kvPut(k, "x"))); err == nil {
					keyOf[pid{c.nodes[epochLeader].p, id}] = k
					c.process(epochLeader)
				}
			}
		case x < 600: // deliver a random message (reorder)
			if len(c.queue) > 0 {
				i := rng.IntN(min(len(c.queue), 4))
				m := c.queue[i]
				c.queue = slices.Delete(c.queue, i, i+1)
				if rng.IntN(20) == 0 { // duplicate
					c.queue = append(c.queue, proto.Clone(m).(*minimonv1.PaxosMessage))
				}
				if !c.isCut(m.From, m.To) && !c.nodes[m.To].down {
					c.nodes[m.To].p.Step(c.now, m)
					c.process(m.To)
				}
			}
		case x < 620: // drop a message
			if len(c.queue) > 0 {
				c.queue = c.queue[1:]
			}
		case x < 970: // time passes
			c.now = c.now.Add(time.Duration(1+rng.IntN(20)) * ms)
			for _, r := range c.members {
				if nd := c.nodes[r]; !nd.down {
					nd.p.Tick(c.now)
					c.process(r)
				}
			}
		case x < 980: // partition change
			a, b := int32(rng.IntN(n)), int32(rng.IntN(n))
			if a != b {
				c.setCut(a, b, !c.isCut(a, b))
			}
		case x < 983: // crash and restart with the store kept
			r := int32(rng.IntN(n))
			c.crash(r)
			c.now = c.now.Add(time.Duration(rng.IntN(50)) * ms)
			c.start(r, false)
			if r == epochLeader {
				epochLeader = -1
			}
		case x < 985: // election
			elect()
		default: // a node that asked for bootstrap triggers an election
			for _, r := range c.members {
				if nd := c.nodes[r]; len(nd.bootstrap) > 0 {
					reasons[nd.bootstrap[0]]++
					nd.bootstrap = nil
					elect()
					break
				}
			}
		}
		check()
		if debugSeed == int(seed) && step%50 == 0 {
			fmt.Println(step, c.now.Sub(epoch0), "leader", epochLeader, "q", len(c.queue), c, c.cut, "boots", reasons)
		}
	}
	// Heal, elect everyone, commit one more value: every acknowledged write must be there.
	c.cut = map[[2]int32]bool{}
	c.queue = nil
	c.now = c.now.Add(2 * time.Second)
	for _, r := range c.members {
		c.nodes[r].bootstrap = nil
	}
	c.elect(0, c.members...)
	c.run(700*ms, 10*ms)
	id, err := c.leaderP().Propose(c.now, encodeTx(t, kvPut("final", "x")))
	if err != nil {
		t.Fatalf("seed %d: final propose: %v", seed, err)
	}
	c.run(1500*ms, 10*ms)
	if r := c.nodes[0].results[id]; r.Err != nil || r.Version == 0 {
		t.Fatalf("seed %d: final write not committed: %+v (%v)", seed, r, c)
	}
	check()
	if testing.Verbose() {
		t.Logf("seed %d: %d acknowledged writes, lc %d, %d readable observations, bootstraps %v", seed, len(acked), c.leaderP().lc, readableSeen, reasons)
	}
	for _, r := range c.members {
		for _, k := range acked {
			if c.get(r, "kv", k) != "x" {
				t.Fatalf("seed %d: acknowledged write %s (v%d) lost on node %d (%v)", seed, k, ackVer[k], r, c)
			}
		}
	}
}
