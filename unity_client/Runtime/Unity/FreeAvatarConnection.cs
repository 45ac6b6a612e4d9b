// One subscription to a FreeAvatar session, shared by every BlendshapeDriver that names it.
using System;
using System.Collections.Generic;
using UnityEngine;

namespace FreeAvatar
{
    [AddComponentMenu("FreeAvatar/FreeAvatar Connection")]
    [DisallowMultipleComponent]
    public sealed class FreeAvatarConnection : MonoBehaviour
    {
        [Tooltip("http://host:port for a plaintext server, https://host:port for TLS.")]
        public string serverAddress = "http://127.0.0.1:50051";

        [Tooltip("The session to subscribe to: `freeavatar sessions create`, or the SDK's create_session.")]
        public string sessionId = "";

        [Tooltip("The session's token: needed when the server runs with API keys.")]
        public string sessionToken = "";

        [Tooltip("The server's API key, if it wants one. Keep real keys out of committed scenes.")]
        public string apiKey = "";

        [Tooltip("A PEM CA to verify a TLS server against; empty: Mozilla's roots.")]
        [TextArea]
        public string rootCertificatesPem = "";

        [Tooltip("Only these avatars (ids); empty: every avatar of the session.")]
        public List<string> avatarIds = new List<string>();

        /// <summary>Replaces the gRPC transport (tests, custom networks). Set before Start.</summary>
        public Func<IRigTransport> TransportFactory;

        RigStreamClient client;
        IRigTransport transport;
        bool started;
        readonly List<ReceivedFrame> taken = new List<ReceivedFrame>();
        readonly List<BlendshapeDriver> drivers = new List<BlendshapeDriver>();

        public ConnectionState State { get { return client != null ? client.State : ConnectionState.Idle; } }

        /// <summary>Why the stream last ended or failed, for display; "" while all is well.</summary>
        public string LastError { get { return client != null ? client.LastError : ""; } }

        public long FramesReceived { get { return client != null ? client.Frames.Received : 0; } }

        /// <summary>Applies changed settings: disconnects, then subscribes again.</summary>
        public void Reconnect()
        {
            Disconnect();
            Connect();
        }

        // Connecting in Start, not OnEnable, lets a script that adds this component set its
        // fields first (AddComponent runs OnEnable at once).
        void Start()
        {
            started = true;
            Connect();
        }

        void OnEnable()
        {
            if (started) Connect();
        }

        void OnDisable()
        {
            Disconnect();
        }

        void Update()
        {
            if (client == null) return;
            taken.Clear();
            client.Frames.TakeAll(taken);
            foreach (var frame in taken)
            {
                foreach (var driver in drivers)
                {
                    if (driver.Wants(frame)) driver.Receive(frame);
                }
            }
        }

        internal void Register(BlendshapeDriver driver)
        {
            if (!drivers.Contains(driver)) drivers.Add(driver);
        }

        internal void Unregister(BlendshapeDriver driver)
        {
            drivers.Remove(driver);
        }

        void Connect()
        {
            if (client != null) return;
            if (string.IsNullOrEmpty(sessionId))
            {
                Debug.LogWarning("FreeAvatarConnection: set a session id to subscribe to", this);
                return;
            }
            transport = TransportFactory != null
                ? TransportFactory()
                : new GrpcRigTransport(serverAddress, apiKey, rootCertificatesPem);
            var subscription = new SubscribeRequest
            {
                SessionId = sessionId,
                SessionToken = sessionToken,
                AvatarIds = avatarIds.ToArray(),
            };
            client = new RigStreamClient(transport, subscription);
            client.Start();
        }

        void Disconnect()
        {
            if (client == null) return;
            client.Stop(TimeSpan.FromSeconds(1));
            transport.Dispose();
            client = null;
            transport = null;
        }
    }
}
