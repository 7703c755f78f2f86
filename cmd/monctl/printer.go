package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// printer renders command results; plainPrinter and jsonPrinter are the -f formats.
type printer interface {
	Status(*minimonv1.StatusReply) error
	Health(r *minimonv1.HealthReply, detail bool) error
	QuorumStatus(*minimonv1.QuorumStatusReply) error
	MonStatus(*minimonv1.MonStatusReply) error
	MonStat(*minimonv1.MonStatReply) error
	MonDump(*minimonv1.MonMap) error
	// Write confirms a write: plain prints confirmation, json the reply.
	Write(reply protoreflect.ProtoMessage, confirmation string) error
	// ConfigGet prints the value alone when option is set, else every entry.
	ConfigGet(r *minimonv1.ConfigGetReply, option string) error
	ConfigDump(*minimonv1.ConfigDumpReply) error
	ConfigLog(*minimonv1.ConfigLogReply) error
	KVGet(value []byte) error
	KVExists(key string, exists bool) error
	KVList(*minimonv1.KVListReply) error
	WatchEvent(target string, ev *minimonv1.WatchEvent) error
}

// getValue writes a value alone; the newline only on a terminal so that
// `monctl config-key get k > file` stores the exact bytes (Ceph's behaviour).
func getValue(w io.Writer, v []byte, terminal bool) error {
	if terminal && (len(v) == 0 || v[len(v)-1] != '\n') {
		v = append(v[:len(v):len(v)], '\n')
	}
	_, err := w.Write(v)
	return err
}

type plainPrinter struct {
	w        io.Writer
	terminal bool
}

func joinInts(v []int32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(int(x))
	}
	return strings.Join(s, ",")
}

// monmapLine is Ceph's `e3: 3 mons at {a=ADDR,b=ADDR}`.
func monmapLine(m *minimonv1.MonMap) string {
	mons := make([]string, len(m.GetMons()))
	for i, mi := range m.GetMons() {
		mons[i] = mi.GetName() + "=" + mi.GetAddr()
	}
	return fmt.Sprintf("e%d: %d mons at {%s}", m.GetEpoch(), len(mons), strings.Join(mons, ","))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (p *plainPrinter) Status(r *minimonv1.StatusReply) error {
	var b strings.Builder
	fmt.Fprintf(&b, "  cluster:\n    id:     %s\n    health: %s\n", r.GetFsid(), orDash(r.GetHealth().GetStatus()))
	checks := r.GetHealth().GetChecks()
	for _, name := range sortedKeys(checks) {
		fmt.Fprintf(&b, "            %s: %s\n", name, checks[name].GetSummary())
	}
	fmt.Fprintf(&b, "\n  services:\n    mon: quorum %s, leader %s, election epoch %d, monmap e%d\n",
		orDash(strings.Join(r.GetQuorumNames(), ",")), orDash(r.GetLeader()), r.GetElectionEpoch(), r.GetMonmapEpoch())
	fmt.Fprintf(&b, "\n  paxos:\n    first_committed %d, last_committed %d\n",
		r.GetPaxos().GetFirstCommitted(), r.GetPaxos().GetLastCommitted())
	_, err := io.WriteString(p.w, b.String())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Health prints Ceph's `HEALTH_WARN summary; summary` and, with detail, one block per check.
func (p *plainPrinter) Health(r *minimonv1.HealthReply, detail bool) error {
	var b strings.Builder
	b.WriteString(orDash(r.GetStatus()))
	var sums []string
	for _, name := range sortedKeys(r.GetChecks()) {
		sums = append(sums, r.GetChecks()[name].GetSummary())
	}
	if len(sums) > 0 && !detail {
		b.WriteString(" " + strings.Join(sums, "; "))
	}
	b.WriteByte('\n')
	if detail {
		for _, name := range sortedKeys(r.GetChecks()) {
			c := r.GetChecks()[name]
			sev := "WRN"
			if c.GetSeverity() == "HEALTH_ERR" {
				sev = "ERR"
			}
			fmt.Fprintf(&b, "[%s] %s: %s\n", sev, name, c.GetSummary())
			for _, d := range c.GetDetail() {
				fmt.Fprintf(&b, "    %s\n", d)
			}
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (p *plainPrinter) QuorumStatus(r *minimonv1.QuorumStatusReply) error {
	_, err := fmt.Fprintf(p.w, "election epoch %d\nquorum %s %s\nleader %s\nquorum age %s\nmonmap %s\n",
		r.GetElectionEpoch(), orDash(joinInts(r.GetQuorum())), strings.Join(r.GetQuorumNames(), ","),
		orDash(r.GetQuorumLeaderName()), strconv.FormatFloat(r.GetQuorumAge(), 'f', 1, 64)+"s", monmapLine(r.GetMonmap()))
	return err
}

func (p *plainPrinter) MonStatus(r *minimonv1.MonStatusReply) error {
	_, err := fmt.Fprintf(p.w, "mon.%s rank %d %s\nelection epoch %d\nquorum %s\noutside quorum %s\npaxos first_committed %d, last_committed %d\nmonmap %s\n",
		r.GetName(), r.GetRank(), r.GetState(), r.GetElectionEpoch(), orDash(joinInts(r.GetQuorum())),
		orDash(strings.Join(r.GetOutsideQuorum(), ",")), r.GetPaxos().GetFirstCommitted(), r.GetPaxos().GetLastCommitted(),
		monmapLine(r.GetMonmap()))
	return err
}

// MonStat is Ceph's one line:
// e3: 3 mons at {a=ADDR,b=ADDR,c=ADDR}, election epoch 6, leader 0 a, quorum 0,1,2 a,b,c
func (p *plainPrinter) MonStat(r *minimonv1.MonStatReply) error {
	_, err := fmt.Fprintf(p.w, "%s, election epoch %d, leader %d %s, quorum %s %s\n",
		monmapLine(r.GetMonmap()), r.GetElectionEpoch(), r.GetLeaderRank(), r.GetLeaderName(),
		joinInts(r.GetQuorum()), strings.Join(r.GetQuorumNames(), ","))
	return err
}

func (p *plainPrinter) MonDump(m *minimonv1.MonMap) error {
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d\nfsid %s\nlast_changed %s\ncreated %s\n", m.GetEpoch(), m.GetFsid(), m.GetModified(), m.GetCreated())
	for _, mi := range m.GetMons() {
		fmt.Fprintf(&b, "%d: %s mon.%s\n", mi.GetRank(), mi.GetAddr(), mi.GetName())
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (p *plainPrinter) Write(_ protoreflect.ProtoMessage, confirmation string) error {
	_, err := fmt.Fprintln(p.w, confirmation)
	return err
}

func configTable(w io.Writer, entries []*minimonv1.ConfigEntry) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "WHO\tMASK\tOPTION\tVALUE")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.GetSection(), e.GetMask(), e.GetName(), e.GetValue())
	}
	return tw.Flush()
}

func (p *plainPrinter) ConfigGet(r *minimonv1.ConfigGetReply, option string) error {
	if option != "" {
		return getValue(p.w, []byte(r.GetEntries()[0].GetValue()), p.terminal)
	}
	return configTable(p.w, r.GetEntries())
}

func (p *plainPrinter) ConfigDump(r *minimonv1.ConfigDumpReply) error {
	return configTable(p.w, r.GetEntries())
}

func entryName(e *minimonv1.ConfigEntry) string {
	if e.GetMask() != "" {
		return e.GetSection() + "/" + e.GetMask() + "/" + e.GetName()
	}
	return e.GetSection() + "/" + e.GetName()
}

// ConfigLog is Ceph's `--- VERSION --- TIME ---` block per change.
func (p *plainPrinter) ConfigLog(r *minimonv1.ConfigLogReply) error {
	var b strings.Builder
	for _, c := range r.GetChanges() {
		fmt.Fprintf(&b, "--- %d --- %s ---\n", c.GetVersion(), c.GetTimestamp())
		for _, e := range c.GetRemoved() {
			fmt.Fprintf(&b, "- %s = %s\n", entryName(e), e.GetValue())
		}
		for _, e := range c.GetSet() {
			fmt.Fprintf(&b, "+ %s = %s\n", entryName(e), e.GetValue())
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (p *plainPrinter) KVGet(v []byte) error { return getValue(p.w, v, p.terminal) }

func (p *plainPrinter) KVExists(key string, exists bool) error {
	if !exists {
		return nil // the caller reports the missing key on stderr and exits 2
	}
	_, err := fmt.Fprintf(p.w, "key '%s' exists\n", key)
	return err
}

func (p *plainPrinter) KVList(r *minimonv1.KVListReply) error {
	var b strings.Builder
	for _, k := range r.GetKeys() {
		b.WriteString(k)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

// printable shows a value as is when it is one line of printable UTF-8, quoted otherwise.
func printable(v []byte) string {
	if utf8.Valid(v) && !bytes.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) && len(v) > 0 {
		return string(v)
	}
	return strconv.Quote(string(v))
}

// WatchEvent prints one line per change: `VERSION: ...` (`VERSION (current): ...` for the
// snapshot sent first).
func (p *plainPrinter) WatchEvent(target string, ev *minimonv1.WatchEvent) error {
	head := strconv.FormatUint(ev.GetVersion(), 10)
	if ev.GetSnapshot() {
		head += " (current)"
	}
	var b strings.Builder
	switch target {
	case "monmap":
		fmt.Fprintf(&b, "%s: %s\n", head, monmapLine(ev.GetMonmap()))
	case "config":
		opts := ev.GetConfig()
		parts := make([]string, 0, len(opts))
		for _, k := range sortedKeys(opts) {
			parts = append(parts, k+"="+opts[k])
		}
		fmt.Fprintf(&b, "%s: %s\n", head, strings.Join(parts, " "))
	default:
		for _, c := range ev.GetKv() {
			if c.GetDeleted() {
				fmt.Fprintf(&b, "%s: rm %s\n", head, c.GetKey())
			} else {
				fmt.Fprintf(&b, "%s: set %s %s\n", head, c.GetKey(), printable(c.GetValue()))
			}
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

type jsonPrinter struct {
	w      io.Writer
	pretty bool
}

func (p *jsonPrinter) emit(raw []byte) error {
	if p.pretty {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return err
		}
		raw = b.Bytes()
	}
	raw = append(raw, '\n')
	_, err := p.w.Write(raw)
	return err
}

func (p *jsonPrinter) msg(m protoreflect.ProtoMessage) error {
	return p.emit(marshalProto(m.ProtoReflect()))
}

func (p *jsonPrinter) Status(r *minimonv1.StatusReply) error             { return p.msg(r) }
func (p *jsonPrinter) Health(r *minimonv1.HealthReply, _ bool) error     { return p.msg(r) }
func (p *jsonPrinter) QuorumStatus(r *minimonv1.QuorumStatusReply) error { return p.msg(r) }
func (p *jsonPrinter) MonStatus(r *minimonv1.MonStatusReply) error       { return p.msg(r) }
func (p *jsonPrinter) MonStat(r *minimonv1.MonStatReply) error           { return p.msg(r) }
func (p *jsonPrinter) MonDump(m *minimonv1.MonMap) error                 { return p.msg(m) }
func (p *jsonPrinter) Write(r protoreflect.ProtoMessage, _ string) error { return p.msg(r) }
func (p *jsonPrinter) ConfigLog(r *minimonv1.ConfigLogReply) error {
	return p.emit(marshalProtoList(r.GetChanges()))
}
func (p *jsonPrinter) ConfigDump(r *minimonv1.ConfigDumpReply) error {
	return p.emit(marshalProtoList(r.GetEntries()))
}

// ConfigGet prints the value as a JSON string for one option (Ceph's form), else the list of
// winning entries.
func (p *jsonPrinter) ConfigGet(r *minimonv1.ConfigGetReply, option string) error {
	if option != "" {
		raw, err := json.Marshal(r.GetEntries()[0].GetValue())
		if err != nil {
			return err
		}
		return p.emit(raw)
	}
	return p.emit(marshalProtoList(r.GetEntries()))
}

// KVGet prints the raw value in every format, as Ceph's config-key get does: the value is
// the user's bytes, not a document of ours.
func (p *jsonPrinter) KVGet(v []byte) error {
	_, err := p.w.Write(v)
	return err
}

func (p *jsonPrinter) KVExists(key string, exists bool) error {
	raw, err := json.Marshal(struct {
		Key    string `json:"key"`
		Exists bool   `json:"exists"`
	}{key, exists})
	if err != nil {
		return err
	}
	return p.emit(raw)
}

func (p *jsonPrinter) KVList(r *minimonv1.KVListReply) error {
	keys := r.GetKeys()
	if keys == nil {
		keys = []string{}
	}
	raw, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	return p.emit(raw)
}

func (p *jsonPrinter) WatchEvent(_ string, ev *minimonv1.WatchEvent) error { return p.msg(ev) }
