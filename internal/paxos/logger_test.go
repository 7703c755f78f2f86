package paxos

import (
	"fmt"
	"testing"
)

// tlog prints the core's log lines; randomRun turns it on for debugSeed.
type tlog struct {
	t *testing.T
	r int32
}

func (l tlog) Debug(msg string, f ...any) { fmt.Println(l.r, "D", msg, f) }
func (l tlog) Info(msg string, f ...any)  { fmt.Println(l.r, "I", msg, f) }
func (l tlog) Warn(msg string, f ...any)  { fmt.Println(l.r, "W", msg, f) }
