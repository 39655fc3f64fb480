package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// The compact binary encodings of log entries (format version 1,
// CommandFormat) and stored actions (part of StateFormat 1). Every length is checked against the remaining input before
// allocating, so garbage cannot make the decoder allocate large buffers or
// panic. Empty byte strings decode as nil.

// actionRecordV1 is the first byte of a stored action (StateFormat 1).
const actionRecordV1 byte = 1

var errShort = errors.New("truncated data")

// binWriter appends encoded fields: varints, and strings and byte slices
// prefixed by their length.
type binWriter struct{ b []byte }

func (w *binWriter) byte1(v byte)     { w.b = append(w.b, v) }
func (w *binWriter) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *binWriter) varint(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *binWriter) bytes(v []byte)   { w.uvarint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *binWriter) str(v string)     { w.uvarint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *binWriter) boolean(v bool)   { w.byte1(boolByte(v)) }
func (w *binWriter) varintInt(v int)  { w.varint(int64(v)) }
func (w *binWriter) uvarintInt(v int) { w.uvarint(uint64(v)) }

// boolByte encodes a bool as 0 or 1.
func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// binReader reads fields; the first error sticks and later reads return
// zero values.
type binReader struct {
	b   []byte
	err error
}

func (r *binReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *binReader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(errShort)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *binReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errors.New("bad uvarint"))
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(errors.New("bad varint"))
		return 0
	}
	r.b = r.b[n:]
	return v
}

// raw returns the next length-prefixed field without copying.
func (r *binReader) raw() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(errShort)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// bytes returns a copy of the next field (nil when empty): the input may be
// bbolt memory that is only valid during its transaction.
func (r *binReader) bytes() []byte {
	v := r.raw()
	if len(v) == 0 {
		return nil
	}
	return bytes.Clone(v)
}

func (r *binReader) str() string { return string(r.raw()) }

func (r *binReader) boolean() bool {
	switch r.byte1() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail(errors.New("bad bool"))
	return false
}

// count reads an element count, bounded by the remaining input (every
// element takes at least minSize bytes).
func (r *binReader) count(minSize int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/minSize) {
		r.fail(errors.New("count exceeds data"))
		return 0
	}
	return int(n)
}

// end reports the sticky error, or trailing bytes.
func (r *binReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
	return r.err
}

// encodeCommandBinary encodes c in format version 1: the version byte, the
// command type, the time, the client, the idempotency key, then the body of
// the type.
func encodeCommandBinary(c *Command) ([]byte, error) {
	if err := validateCommand(c); err != nil {
		return nil, err
	}
	w := binWriter{b: make([]byte, 0, 128)}
	w.byte1(CommandFormat)
	w.byte1(byte(c.Type))
	w.varint(c.Time)
	w.str(c.ClientID)
	w.boolean(c.Idempotency != nil)
	if c.Idempotency != nil {
		w.str(c.Idempotency.Key)
		w.bytes(c.Idempotency.Fingerprint)
	}
	switch c.Type {
	case CmdCreateActions:
		w.boolean(c.Create.CSV)
		w.varint(c.Create.DefaultTTLMS)
		w.varint(c.Create.MaxTTLMS)
		w.varint(c.Create.MaxActions)
		w.uvarintInt(len(c.Create.Rows))
		for i := range c.Create.Rows {
			r := &c.Create.Rows[i]
			w.varintInt(r.Row)
			w.str(string(r.Error))
			w.str(r.Message)
			w.str(r.ActionID)
			w.bytes(r.SealedPayload)
			w.bytes(r.PINHash)
			w.varint(r.ActiveAt)
			w.varint(r.ExpiresAt)
		}
	case CmdConsume:
		w.str(c.Consume.ActionID)
		w.boolean(c.Consume.PINGiven)
		w.bytes(c.Consume.PINHash)
		w.bytes(c.Consume.Consumer)
	case CmdCancel:
		w.str(c.Cancel.ActionID)
	case CmdCreateClient:
		w.str(c.CreateClient.ID)
		w.str(c.CreateClient.Name)
		w.bytes(c.CreateClient.SecretHash)
	case CmdRevokeClient:
		w.str(c.RevokeClient.ID)
	case CmdRecordKeyCheck:
		w.bytes(c.KeyCheck.Value)
	case CmdSetRetention:
		w.varint(c.SetRetention.RetentionMS)
	}
	return w.b, nil
}

// decodeCommandBinary decodes a format version 1 entry after its version
// byte. An unknown command type wraps ErrUnknownCommand.
func decodeCommandBinary(b []byte) (*Command, error) {
	r := binReader{b: b}
	c := &Command{Type: CommandType(r.byte1()), Time: r.varint(), ClientID: r.str()}
	if r.boolean() {
		c.Idempotency = &Idempotency{Key: r.str(), Fingerprint: r.bytes()}
	}
	switch c.Type {
	case CmdCreateActions:
		c.Create = &CreateActions{CSV: r.boolean(), DefaultTTLMS: r.varint(), MaxTTLMS: r.varint(), MaxActions: r.varint()}
		n := r.count(8) // a row takes at least 8 bytes
		if n > 0 {
			c.Create.Rows = make([]CreateRow, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			c.Create.Rows[i] = CreateRow{
				Row: int(r.varint()), Error: Code(r.str()), Message: r.str(), ActionID: r.str(),
				SealedPayload: r.bytes(), PINHash: r.bytes(), ActiveAt: r.varint(), ExpiresAt: r.varint(),
			}
		}
	case CmdConsume:
		c.Consume = &Consume{ActionID: r.str(), PINGiven: r.boolean(), PINHash: r.bytes(), Consumer: r.bytes()}
	case CmdCancel:
		c.Cancel = &Cancel{ActionID: r.str()}
	case CmdCreateClient:
		c.CreateClient = &CreateClient{ID: r.str(), Name: r.str(), SecretHash: r.bytes()}
	case CmdRevokeClient:
		c.RevokeClient = &RevokeClient{ID: r.str()}
	case CmdRecordKeyCheck:
		c.KeyCheck = &KeyCheck{Value: r.bytes()}
	case CmdSetRetention:
		c.SetRetention = &SetRetention{RetentionMS: r.varint()}
	case CmdNoop:
	default:
		if r.err == nil {
			return nil, fmt.Errorf("%w %d (format version %d)", ErrUnknownCommand, c.Type, CommandFormat)
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// encodeAction encodes a stored action.
func encodeAction(a *Action) []byte {
	w := binWriter{b: make([]byte, 0, 96+len(a.SealedPayload)+len(a.Consumer))}
	w.byte1(actionRecordV1)
	w.str(a.ID)
	w.str(a.ClientID)
	w.bytes(a.SealedPayload)
	w.bytes(a.PINHash)
	w.varint(a.CreatedAt)
	w.varint(a.ActiveAt)
	w.varint(a.ExpiresAt)
	w.varint(a.ConsumedAt)
	w.str(a.ConsumedReason)
	w.bytes(a.Consumer)
	w.varint(a.CanceledAt)
	w.varintInt(a.FailedPINAttempts)
	return w.b
}

// decodeAction decodes a stored action.
func decodeAction(b []byte) (*Action, error) {
	if len(b) == 0 || b[0] != actionRecordV1 {
		return nil, errors.New("decode action: unknown record encoding")
	}
	r := binReader{b: b[1:]}
	a := &Action{
		ID: r.str(), ClientID: r.str(), SealedPayload: r.bytes(), PINHash: r.bytes(),
		CreatedAt: r.varint(), ActiveAt: r.varint(), ExpiresAt: r.varint(), ConsumedAt: r.varint(),
		ConsumedReason: r.str(), Consumer: r.bytes(), CanceledAt: r.varint(), FailedPINAttempts: int(r.varint()),
	}
	if err := r.end(); err != nil {
		return nil, fmt.Errorf("decode action: %w", err)
	}
	return a, nil
}
