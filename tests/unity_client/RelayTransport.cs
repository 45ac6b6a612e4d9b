// The tests' transport: the client's calls over TCP to a relay in the Python test, which makes
// each one a real gRPC call to a real server (mono here has no HTTP/2 to speak gRPC itself).
//
// Framing, both ways, is gRPC's own length-prefixed message: a flag byte, a 4-byte big-endian
// length, the bytes. The client sends one message, the encoded SubscribeRequest. The relay
// answers with flag 0x40 (empty) once the server has accepted the call, 0x00 per message, and
// ends with flag 0x80: the status as gRPC-Web writes its trailers, "grpc-status: N\r\n
// grpc-message: text\r\n". A connection that closes without trailers is a lost connection.
using System;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using FreeAvatar;

sealed class RelayTransport : IRigTransport
{
    readonly int port;

    public RelayTransport(int port)
    {
        this.port = port;
    }

    public IRigCall Subscribe(byte[] request, CancellationToken cancel)
    {
        return new Call(port, request);
    }

    public void Dispose() { }

    sealed class Call : IRigCall
    {
        readonly TcpClient tcp = new TcpClient();
        readonly int port;
        readonly byte[] request;
        NetworkStream stream;

        public Call(int port, byte[] request)
        {
            this.port = port;
            this.request = request;
        }

        public async Task WaitAcceptedAsync(CancellationToken cancel)
        {
            using (cancel.Register(() => tcp.Close()))
            {
                await tcp.ConnectAsync("127.0.0.1", port).ConfigureAwait(false);
                stream = tcp.GetStream();
                var header = Header(0, request.Length);
                await stream.WriteAsync(header, 0, header.Length, cancel).ConfigureAwait(false);
                await stream.WriteAsync(request, 0, request.Length, cancel).ConfigureAwait(false);
                var first = await ReadFrame(cancel).ConfigureAwait(false);
                if (first.Flag != 0x40) throw new IOException("the relay sent flag " + first.Flag + " before headers");
            }
        }

        public async Task<byte[]> ReadAsync(CancellationToken cancel)
        {
            using (cancel.Register(() => tcp.Close()))
            {
                var frame = await ReadFrame(cancel).ConfigureAwait(false);
                return frame.Flag == 0 ? frame.Payload : null;
            }
        }

        struct Frame
        {
            public int Flag;
            public byte[] Payload;
        }

        async Task<Frame> ReadFrame(CancellationToken cancel)
        {
            byte[] header;
            try
            {
                header = await ReadExactly(5, cancel).ConfigureAwait(false);
            }
            catch (Exception) when (cancel.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancel);
            }
            int length = header[1] << 24 | header[2] << 16 | header[3] << 8 | header[4];
            var frame = new Frame { Flag = header[0], Payload = await ReadExactly(length, cancel).ConfigureAwait(false) };
            if (frame.Flag == 0x80) Trailers(Encoding.UTF8.GetString(frame.Payload));  // throws unless OK
            return frame;
        }

        static void Trailers(string text)
        {
            int code = -1;
            string message = "";
            foreach (var line in text.Split(new[] { "\r\n" }, StringSplitOptions.RemoveEmptyEntries))
            {
                int colon = line.IndexOf(':');
                string key = line.Substring(0, colon).Trim(), value = line.Substring(colon + 1).Trim();
                if (key == "grpc-status") code = int.Parse(value);
                if (key == "grpc-message") message = value;
            }
            if (code != StatusCodes.Ok) throw new RigCallException(code, message);
        }

        async Task<byte[]> ReadExactly(int count, CancellationToken cancel)
        {
            var buffer = new byte[count];
            for (int read = 0; read < count;)
            {
                int n = await stream.ReadAsync(buffer, read, count - read, cancel).ConfigureAwait(false);
                if (n == 0) throw new IOException("the connection was lost");
                read += n;
            }
            return buffer;
        }

        static byte[] Header(int flag, int length)
        {
            return new[] { (byte)flag, (byte)(length >> 24), (byte)(length >> 16), (byte)(length >> 8), (byte)length };
        }

        public void Dispose()
        {
            tcp.Close();
        }
    }
}
