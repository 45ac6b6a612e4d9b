// What the client needs from a network: one server-streaming call, as raw message bytes.
using System;
using System.Threading;
using System.Threading.Tasks;

namespace FreeAvatar
{
    /// <summary>Opens StreamService.Subscribe calls. In Unity: GrpcRigTransport (Grpc.Net.Client
    /// over YetAnotherHttpHandler); the tests run the same client over a relay to a real server.</summary>
    public interface IRigTransport : IDisposable
    {
        /// <summary>Starts a Subscribe call with an encoded SubscribeRequest.</summary>
        IRigCall Subscribe(byte[] request, CancellationToken cancel);
    }

    public interface IRigCall : IDisposable
    {
        /// <summary>Completes when the server has accepted the call (its response headers came);
        /// throws RigCallException if it refused it.</summary>
        Task WaitAcceptedAsync(CancellationToken cancel);

        /// <summary>The next encoded RigStreamMessage, or null once the server has ended the
        /// stream cleanly; throws RigCallException when it ends with an error status.</summary>
        Task<byte[]> ReadAsync(CancellationToken cancel);
    }

    /// <summary>A call that ended with a gRPC status other than OK.</summary>
    public sealed class RigCallException : Exception
    {
        public readonly int StatusCode;
        public readonly string Detail;

        public RigCallException(int statusCode, string detail)
            : base(FreeAvatar.StatusCodes.Name(statusCode) + ": " + detail)
        {
            StatusCode = statusCode;
            Detail = detail;
        }

        public bool Permanent { get { return FreeAvatar.StatusCodes.IsPermanent(StatusCode); } }
    }
}
