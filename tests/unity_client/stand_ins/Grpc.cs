// Compile-only stand-ins for the parts of Grpc.Core.Api, Grpc.Net.Client, YetAnotherHttpHandler
// and System.Net.Http that GrpcRigTransport uses, with their published names and signatures,
// so that it is type-checked here, where NuGet is out of reach. Nothing here runs.
using System;
using System.Threading;
using System.Threading.Tasks;

namespace System.Net.Http
{
    public abstract class HttpMessageHandler : IDisposable
    {
        public void Dispose() { }
    }
}

namespace Cysharp.Net.Http
{
    public class YetAnotherHttpHandler : System.Net.Http.HttpMessageHandler
    {
        public bool Http2Only { get; set; }
        public string RootCertificates { get; set; }
    }
}

namespace Grpc.Core
{
    public enum StatusCode
    {
        OK = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
        AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9,
        Aborted = 10, OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14,
        DataLoss = 15, Unauthenticated = 16,
    }

    public struct Status
    {
        public StatusCode StatusCode { get { throw new NotImplementedException(); } }
        public string Detail { get { throw new NotImplementedException(); } }
    }

    public class RpcException : Exception
    {
        public Status Status { get { throw new NotImplementedException(); } }
        public StatusCode StatusCode { get { throw new NotImplementedException(); } }
    }

    public enum MethodType { Unary, ClientStreaming, ServerStreaming, DuplexStreaming }

    public class Marshaller<T> { }

    public static class Marshallers
    {
        public static Marshaller<T> Create<T>(Func<T, byte[]> serializer, Func<byte[], T> deserializer)
        {
            throw new NotImplementedException();
        }
    }

    public class Method<TRequest, TResponse>
    {
        public Method(MethodType type, string serviceName, string name,
            Marshaller<TRequest> requestMarshaller, Marshaller<TResponse> responseMarshaller) { }
    }

    public sealed class Metadata
    {
        public void Add(string key, string value) { }
    }

    public struct CallOptions
    {
        public CallOptions(Metadata headers = null, DateTime? deadline = null,
            CancellationToken cancellationToken = default(CancellationToken)) { }
    }

    public interface IAsyncStreamReader<out T>
    {
        T Current { get; }
        Task<bool> MoveNext(CancellationToken cancellationToken);
    }

    public sealed class AsyncServerStreamingCall<TResponse> : IDisposable
    {
        public IAsyncStreamReader<TResponse> ResponseStream { get { throw new NotImplementedException(); } }
        public Task<Metadata> ResponseHeadersAsync { get { throw new NotImplementedException(); } }
        public void Dispose() { }
    }

    public abstract class CallInvoker
    {
        public abstract AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(
            Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request)
            where TRequest : class where TResponse : class;
    }

    public abstract class ChannelBase { }
}

namespace Grpc.Net.Client
{
    public sealed class GrpcChannelOptions
    {
        public System.Net.Http.HttpMessageHandler HttpHandler { get; set; }
        public bool DisposeHttpClient { get; set; }
    }

    public sealed class GrpcChannel : Grpc.Core.ChannelBase, IDisposable
    {
        public static GrpcChannel ForAddress(Uri address, GrpcChannelOptions channelOptions) { throw new NotImplementedException(); }
        public Grpc.Core.CallInvoker CreateCallInvoker() { throw new NotImplementedException(); }
        public void Dispose() { }
    }
}
