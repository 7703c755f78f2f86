package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// marshalProto encodes m the way protojson does with UseProtoNames and EmitUnpopulated
// (snake_case proto field names, zero values present, bytes as base64, map keys as strings),
// with two differences for shell users: 64-bit integers are JSON numbers, not strings (jq
// compares `.epoch > 3` without tonumber), and an unset message field is its zero message, not
// null, so every field named in design.md section 5 is always present with the same shape.
// Fields come in field-number order, map entries in key order.
func marshalProto(m protoreflect.Message) []byte {
	var b bytes.Buffer
	encMessage(&b, m)
	return b.Bytes()
}

// marshalProtoList encodes a list of messages as a JSON array.
func marshalProtoList[T interface{ ProtoReflect() protoreflect.Message }](ms []T) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		encMessage(&b, m.ProtoReflect())
	}
	b.WriteByte(']')
	return b.Bytes()
}

func encMessage(b *bytes.Buffer, m protoreflect.Message) {
	b.WriteByte('{')
	fields := m.Descriptor().Fields()
	first := true
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic() && !m.Has(fd) {
			continue // protojson emits only the member of a oneof that is set
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		encString(b, string(fd.Name()))
		b.WriteByte(':')
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			b.WriteByte('[')
			for j := 0; j < l.Len(); j++ {
				if j > 0 {
					b.WriteByte(',')
				}
				encValue(b, fd, l.Get(j))
			}
			b.WriteByte(']')
		case fd.IsMap():
			mp := v.Map()
			type kv struct {
				k string
				v protoreflect.Value
			}
			var entries []kv
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				entries = append(entries, kv{k.String(), v})
				return true
			})
			slices.SortFunc(entries, func(a, b kv) int {
				if a.k < b.k {
					return -1
				}
				if a.k > b.k {
					return 1
				}
				return 0
			})
			b.WriteByte('{')
			for j, e := range entries {
				if j > 0 {
					b.WriteByte(',')
				}
				encString(b, e.k)
				b.WriteByte(':')
				encValue(b, fd.MapValue(), e.v)
			}
			b.WriteByte('}')
		default:
			encValue(b, fd, v)
		}
	}
	b.WriteByte('}')
}

func encValue(b *bytes.Buffer, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			b.WriteString(`"NaN"`)
		case math.IsInf(f, 1):
			b.WriteString(`"Infinity"`)
		case math.IsInf(f, -1):
			b.WriteString(`"-Infinity"`)
		default:
			out, _ := json.Marshal(f) // finite: cannot fail
			b.Write(out)
		}
	case protoreflect.StringKind:
		encString(b, v.String())
	case protoreflect.BytesKind:
		encString(b, base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			encString(b, string(ev.Name()))
		} else {
			b.WriteString(strconv.Itoa(int(v.Enum())))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		encMessage(b, v.Message())
	default:
		b.WriteString("null")
	}
}

func encString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
}
