// The client's network in Unity: gRPC over HTTP/2 with Grpc.Net.Client and YetAnotherHttpHandler
// (Unity's own HTTP stack has no HTTP/2). Messages cross it as raw bytes, which the core decodes
// (RigWire), so the code that reads frames here is the code the tests run against the server.
using System;
using System.Threading;
using System.Threading.Tasks;
using Cysharp.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;

namespace FreeAvatar
{
    public sealed class GrpcRigTransport : IRigTransport
    {
        static readonly Marshaller<byte[]> RawBytes = Marshallers.Create(bytes => bytes, bytes => bytes);
        static readonly Method<byte[], byte[]> SubscribeMethod = new Method<byte[], byte[]>(
            MethodType.ServerStreaming, "freeavatar.v1.StreamService", "Subscribe", RawBytes, RawBytes);

        readonly GrpcChannel channel;
        readonly CallInvoker invoker;
        readonly Metadata headers = new Metadata();

        /// <param name="address">http://host:port for a plaintext server, https://host:port for TLS.</param>
        /// <param name="apiKey">Sent as "authorization: Bearer KEY" when the server wants keys.</param>
        /// <param name="rootCertificatesPem">The CA to verify a TLS server against; null: Mozilla's roots.</param>
        public GrpcRigTransport(string address, string apiKey = null, string rootCertificatesPem = null)
        {
            var uri = new Uri(address);
            var handler = new YetAnotherHttpHandler
            {
                // Plaintext gRPC needs HTTP/2 without the HTTP/1.1 upgrade dance (h2c).
                Http2Only = true,
            };
            if (!string.IsNullOrEmpty(rootCertificatesPem)) handler.RootCertificates = rootCertificatesPem;
            channel = GrpcChannel.ForAddress(uri, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
            invoker = channel.CreateCallInvoker();
            if (!string.IsNullOrEmpty(apiKey)) headers.Add("authorization", "Bearer " + apiKey);
        }

        public IRigCall Subscribe(byte[] request, CancellationToken cancel)
        {
            var options = new CallOptions(headers, null, cancel);
            return new Call(invoker.AsyncServerStreamingCall(SubscribeMethod, null, options, request));
        }

        public void Dispose()
        {
            channel.Dispose();
        }

        sealed class Call : IRigCall
        {
            readonly AsyncServerStreamingCall<byte[]> call;

            public Call(AsyncServerStreamingCall<byte[]> call)
            {
                this.call = call;
            }

            public async Task WaitAcceptedAsync(CancellationToken cancel)
            {
                try
                {
                    await call.ResponseHeadersAsync.ConfigureAwait(false);
                }
                catch (RpcException error)
                {
                    throw Status(error);
                }
            }

            public async Task<byte[]> ReadAsync(CancellationToken cancel)
            {
                try
                {
                    return await call.ResponseStream.MoveNext(cancel).ConfigureAwait(false) ? call.ResponseStream.Current : null;
                }
                catch (RpcException error)
                {
                    if (error.StatusCode == StatusCode.Cancelled && cancel.IsCancellationRequested)
                        throw new OperationCanceledException(cancel);
                    throw Status(error);
                }
            }

            public void Dispose()
            {
                call.Dispose();
            }

            static RigCallException Status(RpcException error)
            {
                return new RigCallException((int)error.StatusCode, error.Status.Detail);
            }
        }
    }
}
