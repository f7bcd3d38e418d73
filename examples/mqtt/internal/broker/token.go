// SPDX-License-Identifier: Apache-2.0

package broker

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/northstar-oci/northstar/client"
)

// TokenApp is the app name tokens for this broker carry.
const TokenApp = "mqtt"

// tokenAuthHook lets a client in when its password is a northstar token
// made for this broker's identity, by the identity the client gives as
// its username, for app "mqtt": the broker asks its own API socket, where
// only tokens addressed to it verify, each once.
//
// Unlike the shared secret this tells containers apart: a container that
// holds the same lifecycle secret file but speaks as another identity
// cannot log in as the client, a token that was seen on the wire does not
// work twice, and tokens keep verifying across a runtime restart without
// restarting the broker.
type tokenAuthHook struct {
	mqtt.HookBase
	api *client.Client
	log *lineWriter
}

var _ mqtt.Hook = (*tokenAuthHook)(nil)

func (*tokenAuthHook) ID() string { return "northstar-token-auth" }

func (*tokenAuthHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *tokenAuthHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	verdict, ok := "accepted", false
	user := string(pk.Connect.Username)
	switch pw := pk.Connect.Password; {
	case !pk.Connect.PasswordFlag || len(pw) == 0:
		verdict = "refused: no password"
	case user == "":
		verdict = "refused: no username (the identity the token is from)"
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := h.api.VerifyToken(ctx, string(pw), user, TokenApp)
		cancel()
		switch {
		case err != nil:
			verdict = "refused: the northstar API failed: " + err.Error()
		case !v.Valid:
			verdict = "refused: token " + v.Reason
		default:
			ok = true
		}
	}
	h.log.printf("%s client_id=%s username=%s remote=%s",
		verdict, logQuote(cl.ID), logQuote(user), cl.Net.Remote)
	return ok
}

func (*tokenAuthHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
