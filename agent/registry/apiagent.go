// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/agent/spire"
	"github.com/northstar-oci/northstar/agent/token"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/store"
)

// Key names in the store: kept sealed across rotations (and the SPIFFE
// CA's seed, spiffe.KeyName).
const (
	RootKeyName  = "root"
	AuditKeyName = "audit"
)

// SPIFFE turns on the SPIFFE Workload API ([spiffe] trust_domain).
type SPIFFE struct {
	TrustDomain spiffeid.TrustDomain
	// X509TTL and JWTTTL are the local CA's SVIDs' lifetimes.
	X509TTL, JWTTTL time.Duration
	// SPIREAdminSocket, if set, is the SPIRE agent's admin socket: the
	// SVIDs are SPIRE's ([spiffe] issuer = "spire"), and no CA is loaded.
	SPIREAdminSocket string
	// Root, when set, puts the CA under an external root before it
	// serves (agent/tpmca: a root in the TPM, which signs intermediates).
	Root func(ctx context.Context, ca *spiffe.CA) error
	// Federated, when set, are the bundles of other trust domains every
	// container receives (agent/federation).
	Federated spiffe.Federated
}

// APIOptions configure the per-container API.
type APIOptions struct {
	// LoadKey, if set, fills dst with the store's key name; the agent sets
	// it to unseal in a child (agent.KeyInChild). Nil: Store.Key here.
	LoadKey   func(ctx context.Context, name string, dst []byte) error
	TokenTTL  time.Duration // default token lifetime
	AuditPath string        // the hash-chained audit log
	// AuditLimits bound the audit log on disk (rotation by size); zero
	// fields take audit's defaults.
	AuditLimits audit.Limits
	// UsedTokens is the journal of used tokens ("": replay.FileName
	// beside the audit log, in the state directory); Replay bounds its
	// memory.
	UsedTokens string
	Replay     replay.Limits
	// Limits bound what each container's socket takes of the agent.
	Limits api.Limits
	// SPIFFE, when set, serves every container the SPIFFE Workload API
	// too, on spiffe.sock beside api.sock, under a per-host CA whose seed
	// is the store's spiffe.KeyName.
	SPIFFE *SPIFFE
}

// apiState is what the API needs beside the registrations: the keys, the
// audit log, the verifier and its memory of used tokens.
type apiState struct {
	root     *keys.Root
	audit    *audit.Log
	used     *replay.Memory
	ttl      time.Duration
	limits   api.Limits
	tokenKs  tokenKeys
	verifier *token.Verifier
	// histKey verifies the audit history in the background; zeroed after.
	histKey []byte
	// ca, when set, is the SPIFFE CA (spiffe its options); gens tells the
	// Workload API's streams of rotations.
	ca     *spiffe.CA
	spiffe *SPIFFE
	gens   *spiffe.Generations
	// spire, instead of ca, is the SPIRE agent the SVIDs come from;
	// spireDirty says a status changed since registry.json was saved.
	spire      *spire.Client
	spireDirty atomic.Bool
}

var _ api.Agent = (*Containers)(nil)

// Current implements api.Agent: the generation before the current one is
// the one this agent served before the last rotation it saw, or, right
// after it started, the generation number below (generations only skip
// numbers when a state directory's record was lost).
func (c *Containers) Current() (*keys.Root, uint64, uint64) {
	gen := c.gen()
	c.mu.Lock()
	prev := c.prev
	c.mu.Unlock()
	if prev == 0 || prev >= gen {
		prev = gen - 1
	}
	return c.api.root, gen, prev
}

// Verifier implements api.Agent.
func (c *Containers) Verifier() *token.Verifier { return c.api.verifier }

// DefaultTTL implements api.Agent.
func (c *Containers) DefaultTTL() time.Duration { return c.api.ttl }

// Audit implements api.Agent. Without the API there is no audit log (its
// key is the API's), and nothing is recorded.
func (c *Containers) Audit(event string, fields map[string]string) error {
	if c.api == nil {
		return nil
	}
	return c.api.audit.Append(event, fields)
}

// RootLocked reports whether the root key's page is locked in memory
// (true without the API: there is no root key).
func (c *Containers) RootLocked() bool { return c.api == nil || c.api.root.Locked() }

// openAPI unseals (or makes) the agent's root and audit keys and opens the
// audit log and the memory of used tokens.
func openAPI(ctx context.Context, opts APIOptions, st *store.Store, c *Containers) (*apiState, error) {
	load := opts.LoadKey
	if load == nil {
		load = func(ctx context.Context, name string, dst []byte) error {
			k, err := st.Key(ctx, name, len(dst))
			copy(dst, k)
			clear(k)
			return err
		}
	}
	if opts.UsedTokens == "" {
		opts.UsedTokens = filepath.Join(filepath.Dir(opts.AuditPath), replay.FileName)
	}
	root, err := keys.LoadRoot(func(dst []byte) error { return load(ctx, RootKeyName, dst) })
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	auditKey := make([]byte, 32)
	if err := load(ctx, AuditKeyName, auditKey); err != nil {
		root.Zero()
		return nil, fmt.Errorf("audit key: %w", err)
	}
	var ca *spiffe.CA
	if opts.SPIFFE != nil && opts.SPIFFE.SPIREAdminSocket == "" {
		if ca, err = spiffe.LoadCA(opts.SPIFFE.TrustDomain, func(dst []byte) error { return load(ctx, spiffe.KeyName, dst) }); err != nil {
			clear(auditKey)
			root.Zero()
			return nil, err
		}
		if opts.SPIFFE.Root != nil {
			if err := opts.SPIFFE.Root(ctx, ca); err != nil {
				clear(auditKey)
				root.Zero()
				return nil, err
			}
		}
	}
	// The head recorded at the last rotation: a log cut below it and
	// written on by this agent would otherwise hide the cut for good.
	var want *audit.Head
	if st != nil {
		if rec, err := st.Current(); err == nil {
			want = rec.AuditHead
		}
	}
	log, err := audit.Open(opts.AuditPath, auditKey, opts.AuditLimits, want)
	if err != nil {
		clear(auditKey)
		root.Zero()
		// Not extended: keep the evidence, start a new log by hand.
		return nil, fmt.Errorf("audit log does not verify: %w; keep %s* as evidence and run 'northstarctl audit reset' (agent stopped) to start a new log", err, opts.AuditPath)
	}
	log.SyncEvery(100 * time.Millisecond)
	// The memory of used tokens is a journal of its own: relearnt from
	// the audit log it was as good as the log, which a container flooding
	// it with refused requests could prune (DESIGN.md §11).
	used, err := replay.Open(opts.UsedTokens, opts.Replay)
	if err != nil {
		log.Close()
		clear(auditKey)
		root.Zero()
		return nil, err
	}
	a := &apiState{root: root, audit: log, used: used, ttl: opts.TokenTTL, limits: opts.Limits, histKey: auditKey}
	if opts.SPIFFE != nil {
		a.ca, a.spiffe, a.gens = ca, opts.SPIFFE, spiffe.NewGenerations(c.gen())
	}
	if opts.SPIFFE != nil && opts.SPIFFE.SPIREAdminSocket != "" {
		// Connects in the background: the agent never waits for SPIRE.
		if a.spire, err = spire.New(spire.Config{AdminSocket: opts.SPIFFE.SPIREAdminSocket, TrustDomain: opts.SPIFFE.TrustDomain,
			Changed: func() { a.spireDirty.Store(true) }}); err != nil {
			a.close()
			return nil, err
		}
	}
	a.tokenKs.derive = root.TokenKey
	a.verifier = &token.Verifier{Memory: used, Revoked: c.RevokedSender, Key: func(g uint64) []byte {
		// Tokens of earlier generations verify until they expire (at most
		// an hour); none of a generation still to come.
		if g == 0 || g > c.gen() {
			return nil
		}
		return a.tokenKs.get(g)
	}}
	return a, nil
}

// start begins the API's background work, once the registrations are
// restored: the audit line of the start, refusal counts, sweeps, and the
// verification of what the log's checkpoint let Open skip, beside the
// serving: a file edited or removed while the agent was stopped is
// reported without delaying the start.
func (a *apiState) start(c *Containers) {
	_ = c.Audit("lifecycle-started", map[string]string{"generation": fmt.Sprint(c.gen())})
	c.background(api.RefusalInterval, c.flushRefusals)
	c.background(time.Minute, func() {
		a.used.Sweep()
		a.tokenKs.sweep(api.MaxTTL)
	})
	if a.spire != nil {
		// What SPIRE answers reaches registry.json (northstarctl status)
		// within a second, in one write however many streams changed.
		c.background(time.Second, func() {
			if a.spireDirty.Swap(false) {
				_ = c.save()
			}
		})
	}
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer clear(a.histKey)
		if _, err := a.audit.VerifyHistory(a.histKey); err != nil {
			fmt.Fprintf(c.log, "agent: warning: the audit history does not verify: %v; keep the audit log as evidence ('northstarctl audit verify' names the line)\n", err)
			_ = c.Audit("audit-history-does-not-verify", map[string]string{"error": err.Error()})
		}
	}()
}

// flushRefusals writes every socket's refusal count.
func (c *Containers) flushRefusals() {
	c.mu.Lock()
	servers := make([]*api.Server, 0, len(c.byKey))
	for _, s := range c.byKey {
		if s.srv != nil {
			servers = append(servers, s.srv)
		}
	}
	c.mu.Unlock()
	for _, s := range servers {
		s.FlushRefusals()
	}
}

func (a *apiState) close() error {
	var err error
	if a.spire != nil {
		err = a.spire.Close()
	}
	a.tokenKs.zero()
	a.root.Zero()
	return errors.Join(err, a.used.Close(), a.audit.Close())
}
