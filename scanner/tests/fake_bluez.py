#!/usr/bin/env python3
"""A fake BlueZ for the scanner's BLE end-to-end test.

It owns `org.bluez` on the bus at ADDRESS (a private dbus-daemon) and offers what
btleplug (through bluez-async) uses: the ObjectManager at `/`, one Adapter1 at
`/org/bluez/hci0`, and Device1 objects under it with RSSI, ManufacturerData,
ServiceData and UUIDs properties and PropertiesChanged signals.

Like BlueZ, it reports nothing until StartDiscovery. Then it adds the phones
(InterfacesAdded) and sends ADS_PER_SCAN advertisements per phone (PropertiesChanged
on RSSI and the advertised data), one every 100 ms, and falls silent: a stalled
event stream, which the scanner's watchdog must notice and restart the scan. A
phone with `"fromScan": N` only turns up from the Nth StartDiscovery on.

Every call it gets is written as one JSON line to LOG; StartDiscovery also records
the caller's D-Bus connection (its unique name) and how many connections the bus
has, so a test can see whether a restarted scan opened a new one.

usage: fake_bluez.py ADDRESS PHONES_JSON LOG ADS_PER_SCAN
"""

import json
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

PROPS = "org.freedesktop.DBus.Properties"
OBJMGR = "org.freedesktop.DBus.ObjectManager"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
ADAPTER_PATH = "/org/bluez/hci0"

address, phones_file, log_path, ads_per_scan = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
phones = json.load(open(phones_file))


def log(**entry):
    with open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def byte_array(hexstr):
    return dbus.Array([dbus.Byte(b) for b in bytes.fromhex(hexstr)], signature="y")


class PropertyObject(dbus.service.Object):
    """An object with org.freedesktop.DBus.Properties over `self.props[iface]`."""

    def __init__(self, bus, path, iface, props):
        super().__init__(bus, path)
        self.path = path
        self.iface = iface
        self.props = props

    @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
    def Get(self, iface, name):
        return self.props[name]

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return dbus.Dictionary(self.props, signature="sv") if iface == self.iface else dbus.Dictionary({}, signature="sv")

    @dbus.service.method(PROPS, in_signature="ssv")
    def Set(self, iface, name, value):
        log(call="Set", path=self.path, name=str(name), value=bool(value) if isinstance(value, dbus.Boolean) else str(value))
        self.props[name] = value
        self.PropertiesChanged(iface, {name: value}, [])

    @dbus.service.signal(PROPS, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass


class Device(PropertyObject):
    def __init__(self, bus, phone):
        mac = phone["address"]
        path = ADAPTER_PATH + "/dev_" + mac.replace(":", "_")
        props = {
            "Address": dbus.String(mac),
            "AddressType": dbus.String("random"),
            "Alias": dbus.String(mac.replace(":", "-")),
            "Adapter": dbus.ObjectPath(ADAPTER_PATH),
            "Paired": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "ServicesResolved": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "RSSI": dbus.Int16(phone["rssi"][0]),
            "UUIDs": dbus.Array([dbus.String(u) for u in phone.get("uuids", [])], signature="s"),
            "ManufacturerData": dbus.Dictionary(
                {dbus.UInt16(int(k)): byte_array(v) for k, v in phone.get("manufacturerData", {}).items()}, signature="qv"
            ),
            "ServiceData": dbus.Dictionary(
                {dbus.String(k): byte_array(v) for k, v in phone.get("serviceData", {}).items()}, signature="sv"
            ),
        }
        super().__init__(bus, path, DEVICE, props)
        self.phone = phone
        self.sent = 0

    def advertise(self):
        """One advertisement: BlueZ reports the RSSI and the data it carried."""
        rssi = self.phone["rssi"][self.sent % len(self.phone["rssi"])]
        self.sent += 1
        self.props["RSSI"] = dbus.Int16(rssi)
        changed = {"RSSI": dbus.Int16(rssi)}
        if self.phone.get("manufacturerData"):
            changed["ManufacturerData"] = self.props["ManufacturerData"]
        if self.phone.get("serviceData"):
            changed["ServiceData"] = self.props["ServiceData"]
        self.PropertiesChanged(DEVICE, dbus.Dictionary(changed, signature="sv"), dbus.Array([], signature="s"))


class Root(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, "/")
        self.objects = {}

    def add(self, obj):
        self.objects[obj.path] = obj
        self.InterfacesAdded(dbus.ObjectPath(obj.path), {obj.iface: dbus.Dictionary(obj.props, signature="sv")})

    @dbus.service.method(OBJMGR, out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return {dbus.ObjectPath(p): {o.iface: dbus.Dictionary(o.props, signature="sv")} for p, o in self.objects.items()}

    @dbus.service.signal(OBJMGR, signature="oa{sa{sv}}")
    def InterfacesAdded(self, path, interfaces):
        pass


class Adapter(PropertyObject):
    def __init__(self, bus, root):
        props = {
            "Address": dbus.String("00:1A:7D:DA:71:13"),
            "AddressType": dbus.String("public"),
            "Name": dbus.String("fake-bluez"),
            "Alias": dbus.String("fake-bluez"),
            "Modalias": dbus.String("usb:v1D6Bp0246d0537"),
            "Powered": dbus.Boolean(False),
            "Discovering": dbus.Boolean(False),
        }
        super().__init__(bus, ADAPTER_PATH, ADAPTER, props)
        self.bus = bus
        self.root = root
        self.devices = []
        self.added = set()
        self.scans = 0
        self.timer = None

    @dbus.service.method(ADAPTER, in_signature="a{sv}")
    def SetDiscoveryFilter(self, flt):
        log(call="SetDiscoveryFilter", filter={str(k): (bool(v) if isinstance(v, dbus.Boolean) else str(v)) for k, v in flt.items()})

    @dbus.service.method(ADAPTER, sender_keyword="sender")
    def StartDiscovery(self, sender=None):
        self.scans += 1
        connections = len([n for n in self.bus.list_names() if str(n).startswith(":")])
        log(call="StartDiscovery", sender=str(sender), connections=connections, scan=self.scans)
        self.props["Discovering"] = dbus.Boolean(True)
        self.PropertiesChanged(ADAPTER, {"Discovering": dbus.Boolean(True)}, [])
        for phone in phones:
            if phone["address"] not in self.added and phone.get("fromScan", 1) <= self.scans:
                self.added.add(phone["address"])
                d = Device(self.bus, phone)
                self.devices.append(d)
                self.root.add(d)
        remaining = [ads_per_scan]

        def tick():
            if remaining[0] <= 0 or not self.props["Discovering"]:
                log(call="silent")
                self.timer = None
                return False
            remaining[0] -= 1
            for d in self.devices:
                d.advertise()
            return True

        if self.timer is not None:
            GLib.source_remove(self.timer)
        self.timer = GLib.timeout_add(100, tick)

    @dbus.service.method(ADAPTER)
    def StopDiscovery(self):
        log(call="StopDiscovery")
        self.props["Discovering"] = dbus.Boolean(False)
        self.PropertiesChanged(ADAPTER, {"Discovering": dbus.Boolean(False)}, [])


def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    root = Root(bus)
    root.add(Adapter(bus, root))
    name = dbus.service.BusName("org.bluez", bus)  # noqa: F841 (kept alive)
    log(call="ready")
    GLib.MainLoop().run()


main()
