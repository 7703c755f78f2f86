package sim

import (
	"container/heap"
	"time"
)

// event is one scheduled action. Events fire in virtual-time order; ties go to the event
// scheduled first (insertion sequence), so a run depends only on the seed.
type event struct {
	at   time.Duration // virtual time since the start of the run
	seq  uint64
	node int    // target node index, or -1 for a world event
	inc  uint64 // incarnation of the target node when scheduled; 0 = any incarnation
	tick bool   // a node's timer tick (coalesced while the node is paused)
	fn   func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*q = old[:n-1]
	return e
}

// clock is the virtual clock and its event queue.
type clock struct {
	now time.Duration
	seq uint64
	q   eventQueue
}

func (c *clock) schedule(e *event) {
	if e.at < c.now {
		e.at = c.now
	}
	c.seq++
	e.seq = c.seq
	heap.Push(&c.q, e)
}

// next pops the earliest event and advances the clock to it; nil when empty or past limit.
func (c *clock) next(limit time.Duration) *event {
	if len(c.q) == 0 || c.q[0].at > limit {
		return nil
	}
	e := heap.Pop(&c.q).(*event)
	c.now = e.at
	return e
}
