module github.com/northstar-oci/northstar/examples/mqtt

go 1.26.8

require (
	github.com/eclipse/paho.golang v0.23.0
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/northstar-oci/northstar v0.0.0
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/rs/xid v1.4.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

// The client package comes from this repository.
replace github.com/northstar-oci/northstar => ../..
