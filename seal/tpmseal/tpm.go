// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// Options configures the TPM sealer.
type Options struct {
	// Path is "/dev/tpmrm0" (any device path), "unix:/path" (swtpm unixio)
	// or "tcp:host:port" (swtpm data port).
	Path string
	// PCRs (sha256 bank) the sealed object's policy is bound to; empty means
	// a PCR-less policy (still policy-only, never password-authorized).
	PCRs []int
	// LockPath is a file locked around every TPM conversation, so processes
	// sharing a socket TPM take turns. Empty disables locking.
	LockPath string
	// Open overrides how the transport is opened (tests inject a simulator).
	Open func() (transport.TPMCloser, error)
	// Timeout bounds each conversation (waiting for the lock included); 0
	// means none. A device TPM's read cannot be interrupted: there the
	// kernel's own TPM timeouts apply.
	Timeout time.Duration
}

// TPM seals the secret to a TPM 2.0.
//
// The secret becomes the sensitive data of a KeyedHash object created under
// the storage root key (SRK): the TCG ECC P-256 SRK template, kept at
// persistent handle 0x81000001 and created there if the handle is free. The
// object is FixedTPM|FixedParent, so its private area is useless off this
// TPM, and has UserWithAuth off with an authPolicy of PolicyPCR over the
// configured PCRs: only a policy session that saw those PCR values can
// unseal it, never a password. Create and Unseal run in sessions salted with
// the SRK and AES-128-CFB parameter encryption, so the secret never crosses
// the bus (or swtpm's socket) in clear.
//
// Every call is one tpmconn conversation: it opens the TPM, holds LockPath
// throughout, flushes what it loaded and closes the TPM. A TPM is safe for
// concurrent use.
type TPM struct {
	opts Options // PCRs sorted and deduplicated
}

var _ seal.Sealer = (*TPM)(nil)

// SRKHandle is the persistent handle of the storage root key (TCG
// provisioning guidance's SRK handle).
const SRKHandle = tpm2.TPMHandle(0x81000001)

// maxSealSize is MAX_SYM_DATA, the most a TPM will seal in one object.
const maxSealSize = 128

// New returns a TPM sealer. It checks the options but does not touch the TPM.
func New(opts Options) (*TPM, error) {
	if opts.Path == "" && opts.Open == nil {
		return nil, errors.New("tpm: no path configured; set [tpm] path in the config")
	}
	pcrs := slices.Clone(opts.PCRs)
	slices.Sort(pcrs)
	pcrs = slices.Compact(pcrs)
	if err := seal.CheckPCRs(pcrs); err != nil {
		return nil, fmt.Errorf("tpm: %w; check [tpm] pcrs in the config", err)
	}
	opts.PCRs = pcrs
	return &TPM{opts: opts}, nil
}

// Name implements seal.Sealer.
func (*TPM) Name() string { return seal.KindTPM }

// conversation runs fn in one conversation with the configured TPM, within
// opts.Timeout.
func (t *TPM) conversation(ctx context.Context, fn func(transport.TPM) error) error {
	parent := ctx
	var deadline time.Time // ours, zero without a timeout
	if t.opts.Timeout > 0 {
		deadline = time.Now().Add(t.opts.Timeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	err := tpmconn.Converse(ctx, tpmconn.Options{Path: t.opts.Path, LockPath: t.opts.LockPath, Open: t.opts.Open}, fn)
	if err != nil && ourDeadline(parent, deadline) {
		return fmt.Errorf("tpm %s: gave up after %s ([tpm] timeout): %w", t.opts.Path, t.opts.Timeout, err)
	}
	return err
}

// ourDeadline reports whether a conversation that failed under deadline
// failed because of it, not of the caller's context: the deadline has
// passed, the caller's context is live and its own deadline, if any, is not
// earlier. Not ctx.Err(): the connection's deadline is the same instant and
// the context's timer runs on its own goroutine, so a dial, write or read
// can fail with "i/o timeout" before ctx.Err() says so.
func ourDeadline(parent context.Context, deadline time.Time) bool {
	if deadline.IsZero() || time.Now().Before(deadline) || parent.Err() != nil {
		return false
	}
	theirs, ok := parent.Deadline()
	return !ok || !theirs.Before(deadline)
}

// Seal implements seal.Sealer. It trusts the SRK the TPM reports (or creates):
// use it to provision, and SealPinned for every later seal.
func (t *TPM) Seal(ctx context.Context, plaintext []byte) ([]byte, error) {
	return t.sealUnder(ctx, plaintext, nil)
}

// SealPinned implements seal.KeyPinner: it seals only if the TPM's SRK is the
// one prev was sealed under.
//
// The naive way, Seal, encrypts the session salt (and so the new secret on
// its way into TPM2_Create) to whatever public key an unauthenticated
// ReadPublic returns. Sealing runs unattended at every containerd restart,
// so a process between northstar and the TPM (a fake socket at a unix: TPM
// path, an interposer on the bus) could answer with its own key and read
// the new secret. Pinning the SRK's name (a hash of its public area,
// computed here) to the one the previous blob recorded makes such a key
// fail before anything secret is sent. Not defended: the very first seal
// (init, or a rotation over an unreadable record), which has nothing to
// pin to; `northstarctl rotate --new-srk` re-provisions on purpose.
func (t *TPM) SealPinned(ctx context.Context, plaintext, prev []byte) ([]byte, error) {
	b, _, err := decode(prev)
	if err != nil {
		return nil, fmt.Errorf("tpm seal: the previous blob names no SRK to pin: %w", err)
	}
	return t.sealUnder(ctx, plaintext, b.SRKName)
}

var _ seal.KeyPinner = (*TPM)(nil)

// sealUnder seals plaintext under the SRK, which must have the name
// pinnedSRK unless that is nil.
func (t *TPM) sealUnder(ctx context.Context, plaintext, pinnedSRK []byte) ([]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > maxSealSize {
		return nil, fmt.Errorf("tpm seal: secret must be 1-%d bytes, not %d", maxSealSize, len(plaintext))
	}
	var blob []byte
	err := t.conversation(ctx, func(tpm transport.TPM) error {
		var err error
		blob, err = t.seal(tpm, plaintext, pinnedSRK)
		return err
	})
	return blob, err
}

func (t *TPM) seal(tpm transport.TPM, plaintext, pinnedSRK []byte) ([]byte, error) {
	srk, err := ensureSRK(tpm)
	if err != nil {
		return nil, err
	}
	if pinnedSRK != nil && !bytes.Equal(srk.name.Buffer, pinnedSRK) {
		return nil, fmt.Errorf("tpm seal: %w (the secret was sealed under SRK %s, the TPM now reports %s)",
			seal.ErrSRKChanged, shortName(pinnedSRK), shortName(srk.name.Buffer))
	}
	policy, err := pcrPolicy(tpm, t.opts.PCRs)
	if err != nil {
		return nil, err
	}
	// The secret is Create's first parameter: EncryptIn encrypts it under
	// a session key only this process and the SRK's TPM can derive.
	sess, flush, err := tpm2.HMACSession(tpm, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(srk.handle, srk.pub), tpm2.AESEncryption(128, tpm2.EncryptIn))
	if err != nil {
		return nil, fmt.Errorf("tpm2.StartAuthSession: %w", err)
	}
	defer flush()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: sess},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: plaintext}),
		}},
		InPublic: tpm2.New2B(sealedTemplate(policy)),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm2.Create: %w", err)
	}
	b := &seal.TPMBlob{
		Public:    rsp.OutPublic.Bytes(),
		Private:   rsp.OutPrivate.Buffer,
		SRKName:   srk.name.Buffer,
		PCRs:      t.opts.PCRs,
		SRKPublic: srk.public,
	}
	return b.Encode(), nil
}

// sealedTemplate is the public area of the sealed object.
func sealedTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:    true,
			FixedParent: true,
			// Policy only: USER role (Unseal) needs the PCR policy, and
			// ADMIN role needs a policy with PolicyCommandCode, which ours
			// never has, so the object cannot be re-authorized either.
			UserWithAuth:    false,
			AdminWithPolicy: true,
			// The authValue is empty and never used, so there is nothing for
			// dictionary-attack protection to protect; NoDA keeps a TPM in
			// lockout (someone hammering other keys) from stopping containers.
			NoDA: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
	}
}

// pcrSelection selects pcrs in the sha256 bank. An empty list is a valid
// selection of no PCRs: PolicyPCR over it still makes a policy that only a
// policy session satisfies.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	idx := make([]uint, len(pcrs))
	for i, p := range pcrs {
		idx[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}
}

// pcrPolicy returns the PolicyPCR digest over the PCRs' current values, as
// computed by the TPM itself in a trial session.
func pcrPolicy(tpm transport.TPM, pcrs []int) ([]byte, error) {
	sess, flush, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, fmt.Errorf("tpm2.StartAuthSession (trial): %w", err)
	}
	defer flush()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(tpm); err != nil {
		return nil, fmt.Errorf("tpm2.PolicyPCR (trial, sha256 PCR %s): %w", seal.FormatPCRs(pcrs), err)
	}
	rsp, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm2.PolicyGetDigest: %w", err)
	}
	return rsp.PolicyDigest.Buffer, nil
}

// Unseal implements seal.Sealer.
func (t *TPM) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	b, sealedUnder, err := decode(blob)
	if err != nil {
		return nil, fmt.Errorf("tpm unseal: %w", err)
	}
	// The configured PCRs are a policy, not a hint: a blob sealed before the
	// admin bound the secret to PCR 7 must not keep unsealing without it
	// until the next rotation. (New sorted and deduplicated opts.PCRs;
	// DecodeTPMBlob checked that b.PCRs ascend.)
	if !slices.Equal(b.PCRs, t.opts.PCRs) {
		return nil, fmt.Errorf("tpm unseal: %w (sealed to sha256 PCR %s, the config says %s)",
			seal.ErrPCRSelection, seal.FormatPCRs(b.PCRs), seal.FormatPCRs(t.opts.PCRs))
	}
	var plaintext []byte
	err = t.conversation(ctx, func(tpm transport.TPM) error {
		var err error
		if sealedUnder != nil {
			// The blob carries the SRK's public area: no ReadPublic. A
			// TPM whose SRK is not that key (or none: evicted) refuses the
			// Load, its private area being wrapped by the SRK's seed, or
			// the session, whose salt it cannot decrypt. Anything but the
			// PCRs is tried again the long way, which names the cause.
			plaintext, err = unsealUnder(tpm, sealedUnder, b)
			if err == nil || errors.Is(err, seal.ErrPCRChanged) || errors.Is(err, tpm2.TPMRCPCRChanged) {
				return err
			}
		}
		plaintext, err = unseal(tpm, b)
		return err
	})
	return plaintext, err
}

// unseal asks the TPM for its SRK (creating it where it was evicted: the
// template makes the same key from the same seed), checks it is the one
// the secret was sealed under, and unseals.
func unseal(tpm transport.TPM, b *seal.TPMBlob) ([]byte, error) {
	srk, err := ensureSRK(tpm)
	if err != nil {
		return nil, err
	}
	// Checked before anything is loaded: the salt below is encrypted to the
	// SRK the secret was sealed under, never to a key someone put in its place.
	if !bytes.Equal(srk.name.Buffer, b.SRKName) {
		return nil, fmt.Errorf("tpm unseal: %w (sealed under SRK %s, this TPM's SRK is %s)",
			seal.ErrWrongKey, shortName(b.SRKName), shortName(srk.name.Buffer))
	}
	return unsealUnder(tpm, srk, b)
}

// unsealUnder loads b under srk and unseals it: Load, StartAuthSession,
// PolicyPCR, Unseal (which ends the session) and the object's flush.
// srk is the SRK the secret was sealed under: the session's salt is
// encrypted to it.
func unsealUnder(tpm transport.TPM, srk *srk, b *seal.TPMBlob) ([]byte, error) {
	// The sealed object's name, computed here from the public area the
	// blob carries, not taken from Load's unauthenticated answer: the
	// Unseal session's HMAC binds to it, so a TPM stand-in that loaded
	// something else cannot get an Unseal through. decode checked that the
	// area is encoded canonically and named with SHA-256.
	objName := sha256Name(b.Public)
	// The SRK's authValue is empty by the TCG template: a password session
	// is enough, and nothing secret crosses the bus on Load.
	load, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(tpm)
	if err != nil {
		var fmt1 tpm2.TPMFmt1Error
		if errors.As(err, &fmt1) {
			if isParam, _ := fmt1.Parameter(); isParam {
				return nil, fmt.Errorf("tpm2.Load: %w: %w", seal.ErrCorrupt, err)
			}
		}
		return nil, fmt.Errorf("tpm2.Load: %w", err)
	}
	defer flushContext(tpm, load.ObjectHandle)
	if !bytes.Equal(load.Name.Buffer, objName.Buffer) {
		return nil, fmt.Errorf("tpm2.Load: the TPM names the loaded object %x, its public area hashes to %x", load.Name.Buffer, objName.Buffer)
	}

	// EncryptOut: the TPM encrypts the unsealed secret under the salted
	// session key before it leaves the chip. A one-off session: started
	// and its policy run as Unseal is sent, ended by the TPM when Unseal
	// has used it (continueSession clear), flushed by go-tpm if a step
	// fails: no FlushContext of its own.
	policy := func(tpm transport.TPM, handle tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		if _, err := (tpm2.PolicyPCR{PolicySession: handle, Pcrs: pcrSelection(b.PCRs)}).Execute(tpm); err != nil {
			// go-tpm flushes a session whose command failed, not one
			// whose policy did.
			flushContext(tpm, handle)
			return fmt.Errorf("tpm2.PolicyPCR (sha256 PCR %s): %w", seal.FormatPCRs(b.PCRs), err)
		}
		return nil
	}
	sess := tpm2.Policy(tpm2.TPMAlgSHA256, 16, policy,
		tpm2.Salted(srk.handle, srk.pub), tpm2.AESEncryption(128, tpm2.EncryptOut))
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: load.ObjectHandle, Name: objName, Auth: sess},
	}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCPolicyFail) {
		// The policy is PolicyPCR alone and the TPM accepted the blob on
		// Load, so a failed policy means the PCR values differ.
		return nil, fmt.Errorf("tpm2.Unseal: %w (sha256 PCR %s; TPM_RC_POLICY_FAIL)",
			seal.ErrPCRChanged, seal.FormatPCRs(b.PCRs))
	}
	if err != nil {
		return nil, fmt.Errorf("tpm2.Unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// SRKName returns the TPM name (alg id + SHA-256 of the public area) of the
// SRK at SRKHandle, which every blob records and Unseal compares. It only
// reads: when no SRK is persisted yet, the error wraps seal.ErrNoKey (the first
// Seal creates it).
func (t *TPM) SRKName(ctx context.Context) ([]byte, error) {
	var name []byte
	err := t.conversation(ctx, func(tpm transport.TPM) error {
		srk, err := readSRK(tpm)
		if err != nil {
			return err
		}
		if srk == nil {
			return fmt.Errorf("tpm: %w: no SRK at persistent handle %#x yet (the first seal creates it)", seal.ErrNoKey, uint32(SRKHandle))
		}
		name = srk.name.Buffer
		return nil
	})
	return name, err
}

// Probe checks that the TPM is reachable and the SRK usable: when persisted,
// that it is the standard SRK and a salted session can be started with it;
// when not, that it can be created (a transient primary, flushed again).
// It changes nothing on the TPM.
func (t *TPM) Probe(ctx context.Context) error {
	return t.conversation(ctx, func(tpm transport.TPM) error {
		srk, err := readSRK(tpm)
		if err != nil {
			return err
		}
		if srk == nil {
			h, _, err := createPrimarySRK(tpm)
			if err != nil {
				return err
			}
			flushContext(tpm, h.Handle)
			return nil
		}
		_, flush, err := tpm2.HMACSession(tpm, tpm2.TPMAlgSHA256, 16, tpm2.Salted(srk.handle, srk.pub))
		if err != nil {
			return fmt.Errorf("tpm2.StartAuthSession (salted with the SRK): %w", err)
		}
		return flush()
	})
}

// EnsureSRK makes sure the SRK northstar seals under is persisted at
// SRKHandle (creating it if the handle is free) and returns its name. Other
// TPM users of the agent (package attest) create their keys under it, so
// that one storage root serves them all.
func EnsureSRK(tpm transport.TPM) ([]byte, error) {
	s, err := ensureSRK(tpm)
	if err != nil {
		return nil, err
	}
	return s.name.Buffer, nil
}

// ensureSRK returns the persistent SRK, creating and persisting it first if
// the handle is free. When it exists (every call but the first), this is
// one ReadPublic: no CreatePrimary on the hot path.
func ensureSRK(tpm transport.TPM) (*srk, error) {
	if s, err := readSRK(tpm); s != nil || err != nil {
		return s, err
	}
	h, _, err := createPrimarySRK(tpm)
	if err != nil {
		return nil, err
	}
	defer flushContext(tpm, h.Handle)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     h,
		PersistentHandle: SRKHandle,
	}.Execute(tpm)
	// NV_DEFINED: another process persisted it between our read and now.
	if err != nil && !errors.Is(err, tpm2.TPMRCNVDefined) {
		return nil, fmt.Errorf("tpm2.EvictControl (persist SRK at %#x): %w", uint32(SRKHandle), err)
	}
	s, err := readSRK(tpm)
	if err == nil && s == nil {
		err = fmt.Errorf("tpm: SRK at %#x vanished right after it was persisted", uint32(SRKHandle))
	}
	return s, err
}

// readSRK returns the SRK at SRKHandle, nil if the handle is empty, or an
// error if it holds a key that is not the TCG ECC P-256 SRK.
func readSRK(tpm transport.TPM) (*srk, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: SRKHandle}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tpm2.ReadPublic (SRK %#x): %w", uint32(SRKHandle), err)
	}
	if s, ok := srkFromPublic(rsp.OutPublic.Bytes()); ok {
		return s, nil
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm2.ReadPublic (SRK %#x): %w", uint32(SRKHandle), err)
	}
	return nil, fmt.Errorf("tpm: persistent handle %#x holds a key (%s) that is not the TCG ECC P-256 SRK northstar seals under; "+
		"it may belong to another tool: free the handle or use sealer = \"host\"", uint32(SRKHandle), algName(pub.Type))
}

// createPrimarySRK creates the SRK as a transient object; the caller flushes it.
func createPrimarySRK(tpm transport.TPM) (tpm2.NamedHandle, *tpm2.TPMTPublic, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm2.CreatePrimary (SRK): the owner hierarchy has a password; "+
			"persist the TCG ECC P-256 SRK at %#x by hand: %w", uint32(SRKHandle), err)
	}
	if err != nil {
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm2.CreatePrimary (SRK): %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flushContext(tpm, rsp.ObjectHandle)
		return tpm2.NamedHandle{}, nil, fmt.Errorf("tpm2.CreatePrimary (SRK): %w", err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, pub, nil
}

// flushContext frees a transient object. Best effort: it runs in defers
// after the result is decided, and a TPM that cannot flush will say so on
// the next command.
func flushContext(tpm transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
}

// shortName abbreviates a TPM name for messages: the start of its digest
// (the alg id is always SHA-256), enough to tell two SRKs apart.
func shortName(name []byte) string {
	if len(name) == seal.SRKNameSize {
		return fmt.Sprintf("%x…", name[2:10])
	}
	return fmt.Sprintf("%x", name)
}

func algName(alg tpm2.TPMAlgID) string {
	switch alg {
	case tpm2.TPMAlgECC:
		return "ECC"
	case tpm2.TPMAlgRSA:
		return "RSA"
	}
	return fmt.Sprintf("type %#x", uint16(alg))
}
