package monitor

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// A forwarded write that reaches a monitor which is not the leader (the forwarding peon's view
// is stale: the leader changed) is answered at once with errForwardNotLeader and proposes
// nothing, so the forwarding peon re-forwards instead of both waiting out maxWait.
func TestForwardedWriteToPeonAnswersAtOnce(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	peon := mons[(li+1)%3]
	ctx, cancel := rpcCtx(maxWait / 2) // a peon waiting for the leader role would miss this
	defer cancel()
	err := Forward(ctx, minimonv1.NewPeerClient(peon.cc), peon.m.fsid, mons[(li+2)%3].cfg.Name,
		minimonv1.Monitor_KVSet_FullMethodName, &minimonv1.KVSetRequest{Key: "fwd", Value: []byte("x")},
		&minimonv1.KVWriteReply{})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != errForwardNotLeader {
		t.Fatalf("KVSet forwarded to the peon %s: %v, want Unavailable %q", peon.cfg.Name, err, errForwardNotLeader)
	}
	ctx2, cancel2 := rpcCtx(waitTimeout)
	defer cancel2()
	if _, err := mons[li].c.KVGet(ctx2, &minimonv1.KVGetRequest{Key: "fwd"}); status.Code(err) != codes.NotFound {
		t.Fatalf("the refused forward stored something: %v", err)
	}
	kvSet(t, peon, "fwd", "y") // through the same peon, forwarded to the real leader
}
