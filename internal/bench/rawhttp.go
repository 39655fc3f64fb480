package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"time"
)

// rawPool keeps idle keep-alive HTTP/1.1 connections to one node for the
// raw client: no goroutines per connection, a minimal response parser.
type rawPool struct {
	host string
	idle chan *rawConn
}

type rawConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newRawPool(host string, size int) *rawPool {
	return &rawPool{host: host, idle: make(chan *rawConn, size)}
}

func (p *rawPool) get(ctx context.Context) (*rawConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", p.host, err)
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}, nil
}

func (p *rawPool) put(c *rawConn) {
	select {
	case p.idle <- c:
	default:
		_ = c.c.Close()
	}
}

func (p *rawPool) close() {
	for {
		select {
		case c := <-p.idle:
			_ = c.c.Close()
		default:
			return
		}
	}
}

var errBadResponse = errors.New("malformed HTTP response")

// roundTrip sends one request and reads its response. The connection is
// returned to the pool unless the exchange failed or the server asked to
// close it.
func (p *rawPool) roundTrip(ctx context.Context, method, path string, hdr [][2]string, contentType string, body []byte) (int, []byte, error) {
	c, err := p.get(ctx)
	if err != nil {
		return 0, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.c.SetDeadline(dl)
	} else {
		_ = c.c.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.c.SetDeadline(time.Now()) })
	status, respBody, keep, err := c.exchange(p.host, method, path, hdr, contentType, body)
	if !stop() || err != nil || !keep {
		_ = c.c.Close()
	} else {
		p.put(c)
	}
	return status, respBody, err
}

func (c *rawConn) exchange(host, method, path string, hdr [][2]string, contentType string, body []byte) (status int, respBody []byte, keep bool, err error) {
	w := c.bw
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	for _, h := range hdr {
		w.WriteString(h[0])
		w.WriteString(": ")
		w.WriteString(h[1])
		w.WriteString("\r\n")
	}
	if contentType != "" {
		w.WriteString("Content-Type: ")
		w.WriteString(contentType)
		w.WriteString("\r\n")
	}
	if body != nil || method == "POST" {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.Itoa(len(body)))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		return 0, nil, false, fmt.Errorf("write request: %w", err)
	}
	return readRawResponse(c.br)
}

// readRawResponse parses a status line, headers and a Content-Length or
// chunked body.
func readRawResponse(br *bufio.Reader) (int, []byte, bool, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, fmt.Errorf("read status line: %w", err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("%w: status %q", errBadResponse, line)
	}
	length, chunked, keep := -1, false, true
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, fmt.Errorf("read header: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			continue
		}
		name, val := line[:i], bytes.TrimSpace(line[i+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(val)); err != nil {
				return 0, nil, false, fmt.Errorf("%w: content-length %q", errBadResponse, val)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(val, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(val, []byte("close"))
		}
	}
	var body []byte
	switch {
	case chunked:
		body, err = io.ReadAll(httputil.NewChunkedReader(br))
		if err == nil {
			// Trailers end with an empty line.
			for {
				line, err = br.ReadSlice('\n')
				if err != nil || len(bytes.TrimRight(line, "\r\n")) == 0 {
					break
				}
			}
		}
	case length >= 0:
		body = make([]byte, length)
		_, err = io.ReadFull(br, body)
	default:
		body, err = io.ReadAll(br)
		keep = false
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("read body: %w", err)
	}
	return status, body, keep, nil
}
