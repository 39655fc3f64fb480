package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/testnode"
)

// exampleNode starts a real single node in this process for the examples
// to run against. In your code, use your node's URL and the credentials
// `exactonce clients create` (or `exactonced --dev`) gave you.
func exampleNode() (*testnode.Node, func()) {
	n, stop, err := testnode.Standalone(testnode.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return n, stop
}

// A magic link: create an action holding what the link unlocks, then
// consume it when the link is clicked. Only the first click gets the
// payload; every later one gets ErrAlreadyUsed.
func Example() {
	node, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.New(node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	if err != nil {
		log.Fatal(err)
	}
	created, err := c.Create(ctx, client.CreateRequest{
		Payload:   []byte(`{"userId":"42","action":"login"}`),
		ExpiresAt: time.Now().Add(15 * time.Minute),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("link id starts with act_:", strings.HasPrefix(created.ActionID, "act_"))

	consumed, err := c.Consume(ctx, created.ActionID, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("first click:", string(consumed.Payload))

	_, err = c.Consume(ctx, created.ActionID, nil)
	fmt.Println("second click already used:", errors.Is(err, client.ErrAlreadyUsed))
	// Output:
	// link id starts with act_: true
	// first click: {"userId":"42","action":"login"}
	// second click already used: true
}

// Errors match their API error code with errors.Is, and errors.As gives
// the status, the message and the extra fields of the answer.
func ExampleAPIError() {
	node, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	if err != nil {
		log.Fatal(err)
	}
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"voucher":"SAVE20"}`), PIN: "4711"})
	if err != nil {
		log.Fatal(err)
	}

	_, err = c.Consume(ctx, created.ActionID, &client.ConsumeRequest{PIN: "0000"})
	var apiErr *client.APIError
	if errors.Is(err, client.ErrInvalidPIN) && errors.As(err, &apiErr) {
		var left int
		apiErr.Field("attemptsRemaining", &left)
		fmt.Printf("HTTP %d %s, %d attempts left\n", apiErr.Status, apiErr.Code, left)
	}
	// Output:
	// HTTP 401 invalid_pin, 2 attempts left
}

// ConsumeWithRetry survives a lost answer: it retries only while the
// outcome is unknown (a connection failure, a 503), with one
// Idempotency-Key for every attempt, so the action is consumed at most
// once and a retry gets the first attempt's answer. A definite answer
// such as ErrAlreadyUsed is returned at once.
func ExampleClient_ConsumeWithRetry() {
	node, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	if err != nil {
		log.Fatal(err)
	}
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"order":"1234"}`)})
	if err != nil {
		log.Fatal(err)
	}

	// Keep the key with the job that consumes, to resume it after a crash.
	key := client.NewIdempotencyKey()
	policy := client.RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}
	consumed, err := c.ConsumeWithRetry(ctx, created.ActionID, nil, policy, client.WithIdempotencyKey(key))
	switch {
	case err == nil:
		fmt.Println("consumed:", string(consumed.Payload))
	case client.Temporary(err):
		fmt.Println("outcome unknown: try again later with the same key")
	default:
		fmt.Println("definite answer:", err)
	}

	// The same key again: the first answer, replayed.
	again, err := c.ConsumeWithRetry(ctx, created.ActionID, nil, policy, client.WithIdempotencyKey(key))
	fmt.Println("replayed:", err == nil && string(again.Payload) == string(consumed.Payload))
	// Output:
	// consumed: {"order":"1234"}
	// replayed: true
}

// ListAll follows nextToken to the last page.
func ExampleClient_ListAll() {
	node, stop := exampleNode()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	if err != nil {
		log.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.Create(ctx, client.CreateRequest{Payload: fmt.Appendf(nil, `{"n":%d}`, i)}); err != nil {
			log.Fatal(err)
		}
	}
	active := 0
	err = c.ListAll(ctx, client.ListQuery{State: "active", Limit: 2}, func(p *client.ListPage) error {
		active += len(p.Actions)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("active actions:", active)
	// Output:
	// active actions: 5
}
