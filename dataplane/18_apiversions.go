package dataplane

// ApiVersions, key 18, versions 0-3 (KIP-511 for v3: client software name and version).
//
// A version above 3 is answered from the header alone, as KIP-511 asks: error 35
// (UNSUPPORTED_VERSION) and a v0 body listing ApiVersions' own range, so the client
// retries with a version we speak. The response header is always v0.

import (
	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const apiVersionsKey = int16(kmsg.ApiVersions)

func handleApiVersions(s *Server, r *request) error {
	api := lookupAPI(apiVersionsKey)
	resp := kmsg.NewPtrApiVersionsResponse()
	if r.hdr.APIVersion > api.max || r.hdr.APIVersion < api.min {
		resp.SetVersion(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: api.key, MinVersion: api.min, MaxVersion: api.max})
	} else {
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(r.hdr.APIVersion)
		if r.hdr.APIVersion >= 3 {
			if err := proto.CheckShape(r.body, proto.ApiVersionsRequestV3); err != nil {
				return err
			}
		}
		if err := req.ReadFrom(r.body); err != nil {
			return err
		}
		resp.SetVersion(r.hdr.APIVersion)
		for _, a := range apis {
			resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: a.key, MinVersion: a.advertisedMin(), MaxVersion: a.advertisedMax()})
		}
	}
	writeResponse(r, resp)
	return nil
}

// writeResponse encodes a kmsg response as the request's whole answer.
func writeResponse(r *request, resp kmsg.Response) {
	buf := r.resp.buf
	var start int
	buf.B, start = proto.BeginFrame(buf.B[:0], r.hdr.CorrelationID, proto.IsFlexibleResponse(r.hdr.APIKey, resp.GetVersion()))
	buf.B = resp.AppendTo(buf.B)
	proto.EndFrame(buf.B, start, 0)
	r.resp.setBytes()
}
