//! roost-client on a real async embedded stack: embassy-executor, embassy-time and an
//! embassy-net `TcpSocket`, for a Cortex-M4F (`thumbv7em-none-eabihf`).
//!
//! ```text
//! cargo build -p roost-client --example embassy --target thumbv7em-none-eabihf --release
//! ```
//!
//! Everything board-specific is marked `BOARD:` and stubbed so the example builds without a
//! HAL: the network driver (`Nic`, replace it with your HAL's Ethernet or Wi-Fi driver, e.g.
//! `embassy_stm32::eth::Ethernet` or `cyw43`), the time driver (`Ticks`, your HAL's
//! `time-driver-*` feature provides it), the entry point (`cortex_m_rt::entry` on a real
//! board) and the panic handler (`panic-probe`, ...). It cannot run as it is.
//!
//! On the host it builds as an empty program (the embassy crates here are for the target).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("build this example for thumbv7em-none-eabihf (see the comment at its top)");
}

#[cfg(target_os = "none")]
mod firmware {
    use core::future::Future;
    use core::task::{Context, Waker};

    use embassy_executor::{Executor, Spawner};
    use embassy_futures::select::{Either, select};
    use embassy_net::tcp::TcpSocket;
    use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
    use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
    use embassy_time::{Duration, Instant, Timer};
    use roost_client::{Client, Clock, ConnectOptions, Event, QoS, RamStore, Subscription};
    use static_cell::StaticCell;

    /// The broker: an address on the device's network (here a documentation address).
    const BROKER: (Ipv4Address, u16) = (Ipv4Address::new(192, 0, 2, 10), 1883);

    /// roost-client's clock on embassy-time.
    struct EmbassyClock;

    impl Clock for EmbassyClock {
        fn now_ms(&mut self) -> u64 {
            Instant::now().as_millis()
        }
        fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
            Timer::at(Instant::from_millis(deadline_ms))
        }
    }

    /// The MQTT task: connect, subscribe, publish a reading every 10 s, handle commands,
    /// reconnect (same socket, same session) after any failure.
    #[embassy_executor::task]
    async fn mqtt(stack: Stack<'static>) {
        let mut sock_rx = [0u8; 1024];
        let mut sock_tx = [0u8; 1024];
        let mut socket = TcpSocket::new(stack, &mut sock_rx, &mut sock_tx);
        let (mut tx, mut rx, mut session) = ([0u8; 256], [0u8; 256], [0u8; 512]);
        // Windows: 4 messages in flight out, 2 in (the v5 Receive Maximum). The transport is
        // `&mut TcpSocket`: the client borrows the socket while connected and
        // `take_transport` hands it back for the next connection.
        let mut client: Client<'_, &mut TcpSocket<'_>, _, _, 4, 2> =
            Client::with_windows(EmbassyClock, RamStore::new(&mut session), &mut tx, &mut rx);
        let mut opts = ConnectOptions::new("embassy-node-1");
        opts.keep_alive_secs = 30;
        opts.clean_session = false;
        #[cfg(feature = "v5")]
        {
            opts.protocol = roost_client::Protocol::V5;
            opts.session_expiry_secs = 3600;
        }
        let mut spare = Some(&mut socket);
        let mut next_reading = Instant::now();
        loop {
            if !client.is_connected() {
                let Some(s) = client.take_transport().or_else(|| spare.take()) else {
                    return;
                };
                s.abort();
                let _ = s.flush().await;
                stack.wait_config_up().await;
                if s.connect(BROKER).await.is_err() {
                    spare = Some(s);
                    Timer::after(Duration::from_secs(5)).await;
                    continue;
                }
                // Kept by the client also when CONNECT fails; taken back above.
                if client.connect(s, &opts).await.is_err() {
                    Timer::after(Duration::from_secs(5)).await;
                    continue;
                }
                let _ = client
                    .subscribe(&[Subscription::new("nodes/1/cmd", QoS::AtLeastOnce)])
                    .await;
            }
            // poll is cancel safe: racing it against the sensor timer loses nothing.
            let woke = select(client.poll(), Timer::at(next_reading)).await;
            match woke {
                Either::First(Ok(Event::Message(m))) => {
                    let _command = (m.topic, m.payload);
                }
                Either::First(_) => {}
                Either::Second(()) => {
                    next_reading += Duration::from_secs(10);
                    let reading = read_sensor();
                    let _ = client
                        .publish("nodes/1/temp", &reading, QoS::AtLeastOnce, false)
                        .await;
                }
            }
        }
    }

    /// BOARD: read a sensor.
    fn read_sensor() -> [u8; 4] {
        core::hint::black_box(215_u32).to_le_bytes()
    }

    /// Drives the network stack.
    #[embassy_executor::task]
    async fn net(mut runner: embassy_net::Runner<'static, Nic>) -> ! {
        runner.run().await
    }

    /// BOARD: the network driver. This stand-in never has a link.
    pub struct Nic;

    pub struct NoFrame;

    impl embassy_net_driver::RxToken for NoFrame {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
            f(&mut [])
        }
    }

    impl embassy_net_driver::TxToken for NoFrame {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, _len: usize, f: F) -> R {
            f(&mut [])
        }
    }

    impl embassy_net_driver::Driver for Nic {
        type RxToken<'a> = NoFrame;
        type TxToken<'a> = NoFrame;
        fn receive(&mut self, _: &mut Context) -> Option<(NoFrame, NoFrame)> {
            None
        }
        fn transmit(&mut self, _: &mut Context) -> Option<NoFrame> {
            None
        }
        fn link_state(&mut self, _: &mut Context) -> LinkState {
            LinkState::Down
        }
        fn capabilities(&self) -> Capabilities {
            let mut c = Capabilities::default();
            c.max_transmission_unit = 1514;
            c
        }
        fn hardware_address(&self) -> HardwareAddress {
            HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 1])
        }
    }

    /// BOARD: the time driver (a HAL's `time-driver-*` feature). This stand-in never ticks.
    struct Ticks;

    impl embassy_time_driver::Driver for Ticks {
        fn now(&self) -> u64 {
            0
        }
        fn schedule_wake(&self, _at: u64, waker: &Waker) {
            waker.wake_by_ref();
        }
    }

    embassy_time_driver::time_driver_impl!(static TICKS: Ticks = Ticks);

    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();

    fn start(spawner: Spawner) {
        let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 20), 24),
            gateway: None,
            dns_servers: Default::default(),
        });
        // BOARD: seed from the hardware RNG.
        let seed = 0x5eed;
        let (stack, runner) =
            embassy_net::new(Nic, config, RESOURCES.init(StackResources::new()), seed);
        spawner.spawn(net(runner).expect("net task"));
        spawner.spawn(mqtt(stack).expect("mqtt task"));
    }

    /// BOARD: `#[cortex_m_rt::entry]` on a real board.
    #[unsafe(no_mangle)]
    pub extern "C" fn _start() -> ! {
        EXECUTOR.init(Executor::new()).run(start)
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}
