"""The retired Labs playground's wing: its Socket.IO wires (direct WebSocket, polling), their packets and dialling."""
