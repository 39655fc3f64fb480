package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// RaceAnswer is one racer's answer in a pipelined race.
type RaceAnswer struct {
	Out int
	Err error
	// At is when the answer arrived.
	At time.Time
}

// PipelinedRace sends racers consume requests for id at once over conns
// keep-alive connections spread over the nodes, each connection carrying
// its share as pipelined HTTP/1.1 requests written in one go, so every
// request is in flight at the same time and the client spends little CPU
// per request. It returns the answers and the release time.
func (e *ExactOnce) PipelinedRace(ctx context.Context, id string, racers, conns int) ([]RaceAnswer, time.Time, error) {
	conns = max(1, min(conns, racers))
	type lane struct {
		conn net.Conn
		req  []byte
		n    int
		base int
	}
	lanes := make([]*lane, conns)
	closeAll := func() {
		for _, l := range lanes {
			if l != nil && l.conn != nil {
				_ = l.conn.Close()
			}
		}
	}
	defer closeAll()
	var d net.Dialer
	base := 0
	for i := range conns {
		u, err := url.Parse(e.URLs[i%len(e.URLs)])
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("race: node URL: %w", err)
		}
		c, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("race: dial %s: %w", u.Host, err)
		}
		n := racers / conns
		if i < racers%conns {
			n++
		}
		one := fmt.Sprintf("POST /v1/actions/%s/consume HTTP/1.1\r\nHost: %s\r\nclient-id: %s\r\nclient-secret: %s\r\nContent-Length: 0\r\n\r\n",
			id, u.Host, e.ClientID, e.ClientSecret)
		lanes[i] = &lane{conn: c, req: bytes.Repeat([]byte(one), n), n: n, base: base}
		base += n
	}
	deadline := time.Now().Add(60 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	answers := make([]RaceAnswer, racers)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for _, l := range lanes {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			_ = l.conn.SetDeadline(deadline)
			br := bufio.NewReaderSize(l.conn, 32<<10)
			ready.Done()
			<-start
			if _, err := l.conn.Write(l.req); err != nil {
				for k := range l.n {
					answers[l.base+k] = RaceAnswer{Err: &OpError{Kind: "transport", Err: err}, At: time.Now()}
				}
				return
			}
			for k := range l.n {
				answers[l.base+k] = readRaceAnswer(br)
				if answers[l.base+k].Err != nil && errorKind(answers[l.base+k].Err) == "transport" {
					for j := k + 1; j < l.n; j++ {
						answers[l.base+j] = answers[l.base+k]
					}
					return
				}
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return answers, t0, ctx.Err()
}

// readRaceAnswer reads one consume response from br.
func readRaceAnswer(br *bufio.Reader) RaceAnswer {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return RaceAnswer{Err: &OpError{Kind: "transport", Err: err}, At: time.Now()}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	at := time.Now()
	if err != nil {
		return RaceAnswer{Err: &OpError{Kind: "transport", Err: err}, At: at}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return RaceAnswer{Out: Won, At: at}
	case resp.StatusCode == http.StatusConflict && bytes.Contains(body, []byte(`"already_used"`)):
		return RaceAnswer{Out: Lost, At: at}
	default:
		return RaceAnswer{Err: statusError(resp.StatusCode, body), At: at}
	}
}
